// Certificates the real CA would never issue, signed with its real intermediate key (what an attacker
// holding a mis-issued certificate would present): the TLS layer accepts them, so what refuses them is
// Fabric's own reading of the identity.
import { webcrypto } from "node:crypto";
import {
  ECDSA_SHA256,
  OID_EKU_CLIENT_AUTH,
  claimExtensions,
  normalizePem,
  randomSerialHex,
  toCryptoKeyPair,
  toPem,
  x509,
  type IdentityClaims,
  type TlsCredentials,
} from "@fabric/platform";
import { openCa } from "../../../services/ca/src/ca-directory.js";
import type { Fabric } from "../../harness/fabric.js";

export interface ForgedIdentity {
  /** Subject CN, independent of the SPIFFE ID. */
  commonName: string;
  /** URI SAN. */
  spiffeId: string;
  /** Custom extensions (trust domain is not used for these). */
  claims: Omit<IdentityClaims, "trustDomain">;
  notBefore?: Date;
  notAfter?: Date;
}

export async function forgeIdentity(fabric: Fabric, spec: ForgedIdentity): Promise<TlsCredentials> {
  const ca = await openCa(fabric.dir, fabric.passphrase);
  const issuer = await toCryptoKeyPair(
    ca.intermediateKey.export({ type: "pkcs8", format: "pem" }).toString(),
  );
  const keys = (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ])) as CryptoKeyPair;
  const intermediate = new x509.X509Certificate(ca.intermediatePem);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([OID_EKU_CLIENT_AUTH], false),
    await x509.AuthorityKeyIdentifierExtension.create(intermediate),
    new x509.SubjectAlternativeNameExtension([{ type: "url", value: spec.spiffeId }], false),
    ...claimExtensions({ ...spec.claims, trustDomain: fabric.trustDomain }).map(
      (e) => new x509.Extension(e.oid, e.critical, new Uint8Array(e.value)),
    ),
  ];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: `CN=${spec.commonName}`,
    issuer: intermediate.subject,
    notBefore: spec.notBefore ?? new Date(Date.now() - 60_000),
    notAfter: spec.notAfter ?? new Date(Date.now() + 3_600_000),
    publicKey: keys.publicKey,
    signingKey: issuer.privateKey,
    signingAlgorithm: ECDSA_SHA256,
    extensions,
  });
  return {
    privateKeyPem: toPem(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey), "PRIVATE KEY"),
    certificatePem: normalizePem(cert.toString("pem")),
    chainPem: [ca.intermediatePem],
    caBundlePem: ca.rootPem,
  };
}
