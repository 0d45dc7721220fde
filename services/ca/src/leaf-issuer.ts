import { createHash, sign, type KeyObject } from "node:crypto";
import { isIP } from "node:net";
import {
  OID_EKU_CLIENT_AUTH,
  OID_EKU_SERVER_AUTH,
  buildSpiffeId,
  claimExtensions,
  failedPrecondition,
  fingerprintSha256,
  fromPem,
  isAdminRole,
  randomSerialHex,
  toPem,
  x509,
  type IdentityClaims,
} from "@fabric/platform";
import {
  certificateSubjectDer,
  directoryString,
  objectIdentifier,
  octetString,
  sequence,
  subjectPublicKeyBits,
  tlv,
  unsignedInteger,
  wholeSeconds,
  x509Time,
} from "./der.js";

/** What one leaf certificate is made from; every name in it comes from `claims`. */
export interface LeafRequest {
  claims: IdentityClaims;
  /** DER SubjectPublicKeyInfo of the holder's (verified) key. */
  spki: Buffer;
  notBefore: Date;
  notAfter: Date;
  /** Server names, for service identities only. */
  dnsNames?: string[];
  ipAddresses?: string[];
  /** Lowercase hex; a fresh random one when absent. */
  serialHex?: string;
}

export interface IssuedLeaf {
  der: Buffer;
  pem: string;
  serialHex: string;
  fingerprintSha256: string;
  /** SHA-256 of the holder's SubjectPublicKeyInfo DER, lowercase hex. */
  publicKeySha256: string;
  spiffeId: string;
  /** The validity as written (whole seconds). */
  notBefore: Date;
  notAfter: Date;
}

/** A leaf as Sign answers and records it: the DER stays where it was signed, the PEM carries it on. */
export type LeafSummary = Omit<IssuedLeaf, "der">;

export interface LeafIssuerOptions {
  /** The issuing (intermediate) CA certificate, PEM. */
  issuerCertificatePem: string;
  issuerKey: KeyObject;
  crlUrl: string;
  ocspUrl: string;
}

export const OID_ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2";
const SIGNATURE_ALGORITHM = sequence(objectIdentifier(OID_ECDSA_WITH_SHA256));
const VERSION_3 = tlv(0xa0, unsignedInteger(Buffer.from([2])));
const OID_CN = objectIdentifier("2.5.4.3");
const OID_SAN = "2.5.29.17";
const OID_SKI = "2.5.29.14";

/** Extension ::= SEQUENCE { extnID, critical DEFAULT FALSE, extnValue OCTET STRING } */
function extension(oid: string, critical: boolean, value: Buffer): Buffer {
  return sequence(
    objectIdentifier(oid),
    ...(critical ? [Buffer.from([0x01, 0x01, 0xff])] : []),
    octetString(value),
  );
}

function encodedExtension(ext: x509.Extension): Buffer {
  return extension(ext.type, ext.critical, Buffer.from(ext.value));
}

/** A Fabric serial: 128 random bits whose hex has no leading zero, as ca.proto promises. */
export function newSerialHex(): string {
  for (;;) {
    const serial = randomSerialHex();
    if (!serial.startsWith("0")) return serial;
  }
}

/** The constant DER parts of every leaf one intermediate signs. */
interface Constants {
  issuerName: Buffer;
  /** basicConstraints, keyUsage, extKeyUsage: they differ only by the services' serverAuth. */
  leadingClient: Buffer;
  leadingService: Buffer;
  authorityKeyId: Buffer;
  /** CRL distribution point and OCSP AIA. */
  revocationPointers: Buffer;
}

/**
 * The issuance hot path. Everything constant for a given intermediate and URL set (version, algorithm
 * identifier, issuer name, basic constraints, key usage, EKU, AKI, CRL distribution point, AIA) is DER-
 * encoded once here; per certificate only serial, validity, subject, key, SKI, SANs and the Fabric claim
 * extensions are encoded, the TBSCertificate is concatenated, and node:crypto signs it. The output is the
 * same profile as platform's issueLeafCertificate (the tests compare them extension by extension).
 */
export class LeafIssuer {
  private constructor(
    private readonly key: KeyObject,
    private readonly constants: Constants,
    /** A leaf never outlives its issuer. */
    readonly issuerNotAfter: Date,
  ) {}

  static async create(options: LeafIssuerOptions): Promise<LeafIssuer> {
    const issuerDer = fromPem(options.issuerCertificatePem, "CERTIFICATE");
    const issuerCert = new x509.X509Certificate(new Uint8Array(issuerDer));
    const basic = encodedExtension(new x509.BasicConstraintsExtension(false, undefined, true));
    const usage = encodedExtension(new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true));
    const eku = (ekus: string[]) => encodedExtension(new x509.ExtendedKeyUsageExtension(ekus, false));
    return new LeafIssuer(
      options.issuerKey,
      {
        // Byte for byte the intermediate's subject (RFC 5280 name chaining).
        issuerName: certificateSubjectDer(issuerDer),
        leadingClient: Buffer.concat([basic, usage, eku([OID_EKU_CLIENT_AUTH])]),
        leadingService: Buffer.concat([basic, usage, eku([OID_EKU_CLIENT_AUTH, OID_EKU_SERVER_AUTH])]),
        authorityKeyId: encodedExtension(await x509.AuthorityKeyIdentifierExtension.create(issuerCert)),
        revocationPointers: Buffer.concat([
          encodedExtension(new x509.CRLDistributionPointsExtension([options.crlUrl])),
          encodedExtension(new x509.AuthorityInfoAccessExtension({ ocsp: [options.ocspUrl] })),
        ]),
      },
      issuerCert.notAfter,
    );
  }

  issue(request: LeafRequest): IssuedLeaf {
    const { claims } = request;
    const c = this.constants;
    requireClaimExtensions(claims);
    const spiffeId = buildSpiffeId({
      trustDomain: claims.trustDomain,
      kind: claims.kind,
      id: claims.id,
      ...(claims.cluster ? { cluster: claims.cluster } : {}),
    });
    const serialHex = request.serialHex ?? newSerialHex();
    const notBefore = wholeSeconds(request.notBefore);
    const notAfter = wholeSeconds(request.notAfter);

    const sans = [tlv(0x86, Buffer.from(spiffeId, "ascii"))];
    for (const dns of request.dnsNames ?? []) sans.push(tlv(0x82, Buffer.from(dns, "ascii")));
    for (const ip of request.ipAddresses ?? []) sans.push(tlv(0x87, ipAddressBytes(ip)));
    const keyId = createHash("sha1").update(subjectPublicKeyBits(request.spki)).digest();

    const extensions = tlv(
      0xa3,
      sequence(
        claims.kind === "service" ? c.leadingService : c.leadingClient,
        extension(OID_SKI, false, octetString(keyId)),
        c.authorityKeyId,
        extension(OID_SAN, false, sequence(...sans)),
        c.revocationPointers,
        ...claimExtensions(claims).map((e) => extension(e.oid, e.critical, e.value)),
      ),
    );
    const tbs = sequence(
      VERSION_3,
      unsignedInteger(Buffer.from(serialHex, "hex")),
      SIGNATURE_ALGORITHM,
      c.issuerName,
      sequence(x509Time(notBefore), x509Time(notAfter)),
      sequence(tlv(0x31, sequence(OID_CN, directoryString(claims.id)))),
      request.spki,
      extensions,
    );
    const signature = sign("sha256", tbs, this.key);
    const der = sequence(tbs, SIGNATURE_ALGORITHM, tlv(0x03, Buffer.from([0]), signature));
    return {
      der,
      pem: toPem(der, "CERTIFICATE"),
      serialHex,
      fingerprintSha256: fingerprintSha256(der),
      publicKeySha256: createHash("sha256").update(request.spki).digest("hex"),
      spiffeId,
      notBefore,
      notAfter,
    };
  }
}

/**
 * Fail loud rather than issue a certificate Fabric's services would misread: every identity carries its
 * kind, and the claims its kind is authorized by (cluster for nodes, role and scope for admins, the
 * service name for services).
 */
export function requireClaimExtensions(claims: IdentityClaims): void {
  const missing = (what: string) =>
    failedPrecondition(`refusing to issue: a ${claims.kind} certificate must carry ${what}`);
  switch (claims.kind) {
    case "node":
      if (!claims.cluster) throw missing("its cluster extension");
      break;
    case "service":
      if (!claims.grant) throw missing("a grant extension naming the service");
      break;
    case "admin":
      if (!claims.grant || !isAdminRole(claims.grant)) throw missing("a grant extension with its admin role");
      if (claims.grant === "cluster-admin" && !claims.cluster) throw missing("its cluster extension");
      if (claims.grant === "org-admin" && !claims.organization) throw missing("its organization extension");
      break;
    case "user":
      break;
  }
}

/** IPv4 or IPv6 text → the 4 or 16 octets of an iPAddress GeneralName. */
export function ipAddressBytes(ip: string): Buffer {
  const version = isIP(ip);
  if (version === 4) return Buffer.from(ip.split(".").map(Number));
  if (version !== 6) throw new Error(`"${ip}" is not an IP address`);
  let text = ip;
  const tail: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    tail.push(...v4[1]!.split(".").map(Number));
    text = `${text.slice(0, -v4[1]!.length)}0:0`;
  }
  const [left = "", right] = text.split("::") as [string, string | undefined];
  const groups = (s: string) => (s ? s.split(":").map((g) => parseInt(g, 16)) : []);
  const head = groups(left);
  const rest = right === undefined ? [] : groups(right);
  const fill = right === undefined ? [] : new Array<number>(8 - head.length - rest.length).fill(0);
  const words = [...head, ...fill, ...rest];
  const bytes = Buffer.alloc(16);
  words.forEach((w, i) => bytes.writeUInt16BE(w, i * 2));
  if (tail.length) Buffer.from(tail).copy(bytes, 12);
  return bytes;
}
