import { createHash, createPublicKey, sign, type KeyObject } from "node:crypto";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import {
  AlgorithmIdentifier,
  Certificate,
  Extension,
  id_ce_authorityKeyIdentifier,
} from "@peculiar/asn1-x509";
import { fromPem, x509 } from "@fabric/platform";
import { certificateSubjectDer, subjectPublicKeyBits } from "./der.js";
import { OID_ECDSA_WITH_SHA256 } from "./leaf-issuer.js";

/**
 * The intermediate as signer of CRLs and OCSP responses: its certificate, key, and the identifiers those
 * documents carry (issuer name, key hash, authority key identifier), derived once.
 */
export class SigningAuthority {
  /** DER of the intermediate's subject Name. */
  readonly subjectDer: Buffer;
  /** The intermediate's subjectPublicKey bits (the EC point), which OCSP key hashes cover. */
  readonly publicKeyBits: Buffer;
  readonly certificate: Certificate;

  private constructor(
    readonly certificatePem: string,
    readonly certificateDer: Buffer,
    private readonly key: KeyObject,
    readonly authorityKeyIdentifier: Extension,
  ) {
    this.certificate = AsnConvert.parse(certificateDer, Certificate);
    this.subjectDer = certificateSubjectDer(certificateDer);
    this.publicKeyBits = subjectPublicKeyBits(
      Buffer.from(createPublicKey(key).export({ type: "spki", format: "der" })),
    );
  }

  static async create(certificatePem: string, key: KeyObject): Promise<SigningAuthority> {
    const der = fromPem(certificatePem, "CERTIFICATE");
    const aki = await x509.AuthorityKeyIdentifierExtension.create(
      new x509.X509Certificate(new Uint8Array(der)),
    );
    return new SigningAuthority(
      certificatePem,
      der,
      key,
      new Extension({
        extnID: id_ce_authorityKeyIdentifier,
        critical: false,
        extnValue: new OctetString(aki.value),
      }),
    );
  }

  get signatureAlgorithm(): AlgorithmIdentifier {
    return new AlgorithmIdentifier({ algorithm: OID_ECDSA_WITH_SHA256 });
  }

  /** ECDSA-with-SHA256 over `tbs`, DER-encoded as X.509 and OCSP expect. */
  sign(tbs: Buffer | ArrayBuffer): ArrayBuffer {
    const signature = sign(
      "sha256",
      Buffer.from(tbs instanceof ArrayBuffer ? new Uint8Array(tbs) : tbs),
      this.key,
    );
    return new Uint8Array(signature).buffer;
  }

  /** The issuer name and key hashes an OCSP CertID for our certificates carries, per hash algorithm. */
  certIdHashes(hash: string): { nameHash: Buffer; keyHash: Buffer } {
    return {
      nameHash: createHash(hash).update(this.subjectDer).digest(),
      keyHash: createHash(hash).update(this.publicKeyBits).digest(),
    };
  }
}
