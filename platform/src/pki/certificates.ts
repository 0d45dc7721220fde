import { X509Certificate as NodeX509Certificate, createHash, randomBytes } from "node:crypto";
import { claimExtensions, readClaimExtensions, type IdentityClaims } from "./identity-claims.js";
import { ECDSA_SHA256, toCryptoKeyPair } from "./keys.js";
import { OID_EKU_CLIENT_AUTH, OID_EKU_SERVER_AUTH } from "./oids.js";
import { fromPem, normalizePem, splitCertificates } from "./pem.js";
import { buildSpiffeId, parseSpiffeId, type SpiffeIdentity } from "./spiffe.js";
import { x509 } from "./x509.js";

/**
 * 128 random bits as 32 lowercase hex digits: redrawn until the top bit is clear (a positive DER INTEGER
 * with no padding byte) and the first digit is not 0 (so the hex form has no leading zero to strip).
 */
export function randomSerialHex(): string {
  for (;;) {
    const hex = randomBytes(16).toString("hex");
    if (hex[0]! >= "1" && hex[0]! <= "7") return hex;
  }
}

export function fingerprintSha256(der: Uint8Array): string {
  return createHash("sha256").update(der).digest("hex");
}

export interface Issuer {
  certificatePem: string;
  privateKeyPem: string;
}

export interface CaCertificateParams {
  commonName: string;
  /** The subject key, PEM PKCS#8; its public half goes into the certificate. */
  subjectPrivateKeyPem: string;
  notBefore: Date;
  notAfter: Date;
  /** Absent: self-signed root. */
  issuer?: Issuer;
  /** Path length constraint; intermediates use 0. */
  pathLength?: number;
}

/** Root or intermediate CA certificate (the slow, generic path: CAs are made rarely). */
export async function issueCaCertificate(params: CaCertificateParams): Promise<string> {
  const subjectKeys = await toCryptoKeyPair(params.subjectPrivateKeyPem);
  const name = `CN=${params.commonName}`;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(true, params.pathLength, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(subjectKeys.publicKey),
  ];
  if (!params.issuer) {
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerialHex(),
      name,
      notBefore: params.notBefore,
      notAfter: params.notAfter,
      keys: subjectKeys,
      signingAlgorithm: ECDSA_SHA256,
      extensions,
    });
    return normalizePem(cert.toString("pem"));
  }
  const issuerCert = new x509.X509Certificate(params.issuer.certificatePem);
  const issuerKeys = await toCryptoKeyPair(params.issuer.privateKeyPem);
  extensions.push(await x509.AuthorityKeyIdentifierExtension.create(issuerCert));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: name,
    issuer: issuerCert.subject,
    notBefore: params.notBefore,
    notAfter: params.notAfter,
    publicKey: subjectKeys.publicKey,
    signingKey: issuerKeys.privateKey,
    signingAlgorithm: ECDSA_SHA256,
    extensions,
  });
  return normalizePem(cert.toString("pem"));
}

export interface LeafCertificateParams {
  claims: IdentityClaims;
  /** DER SubjectPublicKeyInfo of the holder's key (from a verified CSR). */
  subjectPublicKeySpki: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  issuer: Issuer;
  serialHex?: string;
  /** Extra SANs for server identities (services): DNS names and IP addresses. */
  dnsNames?: string[];
  ipAddresses?: string[];
  crlUrl?: string;
  ocspUrl?: string;
}

/**
 * Leaf identity certificate over the generic @peculiar/x509 path. The CA's hot path produces the same
 * profile faster; this one is the reference its tests compare against, and what test fixtures use.
 */
export async function issueLeafCertificate(params: LeafCertificateParams): Promise<string> {
  const { claims } = params;
  const issuerCert = new x509.X509Certificate(params.issuer.certificatePem);
  const issuerKeys = await toCryptoKeyPair(params.issuer.privateKeyPem);
  const publicKey = new x509.PublicKey(new Uint8Array(params.subjectPublicKeySpki));
  const spiffeId = buildSpiffeId({
    trustDomain: claims.trustDomain,
    kind: claims.kind,
    id: claims.id,
    ...(claims.cluster ? { cluster: claims.cluster } : {}),
  });
  const altNames: x509.JsonGeneralName[] = [{ type: "url", value: spiffeId }];
  for (const dns of params.dnsNames ?? []) altNames.push({ type: "dns", value: dns });
  for (const ip of params.ipAddresses ?? []) altNames.push({ type: "ip", value: ip });
  const ekus = claims.kind === "service" ? [OID_EKU_CLIENT_AUTH, OID_EKU_SERVER_AUTH] : [OID_EKU_CLIENT_AUTH];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(ekus, false),
    await x509.SubjectKeyIdentifierExtension.create(await publicKey.export()),
    await x509.AuthorityKeyIdentifierExtension.create(issuerCert),
    new x509.SubjectAlternativeNameExtension(altNames, false),
  ];
  if (params.crlUrl) {
    extensions.push(new x509.CRLDistributionPointsExtension([params.crlUrl]));
  }
  if (params.ocspUrl) {
    extensions.push(new x509.AuthorityInfoAccessExtension({ ocsp: [params.ocspUrl] }));
  }
  for (const ext of claimExtensions(claims)) {
    extensions.push(new x509.Extension(ext.oid, ext.critical, new Uint8Array(ext.value)));
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: params.serialHex ?? randomSerialHex(),
    subject: `CN=${claims.id}`,
    issuer: issuerCert.subject,
    notBefore: params.notBefore,
    notAfter: params.notAfter,
    publicKey,
    signingKey: issuerKeys.privateKey,
    signingAlgorithm: ECDSA_SHA256,
    extensions,
  });
  return normalizePem(cert.toString("pem"));
}

/** What Fabric reads off a certificate. */
export interface CertificateFacts {
  serialHex: string;
  subjectCommonName: string | undefined;
  notBefore: Date;
  notAfter: Date;
  fingerprintSha256: string;
  isCa: boolean;
  spiffeId: string | undefined;
  identity: SpiffeIdentity | undefined;
  organization: string | undefined;
  grant: string | undefined;
  /** Principal kind from the custom extension (must agree with the SPIFFE ID). */
  kindExtension: string | undefined;
  clusterExtension: string | undefined;
}

export function inspectCertificate(certificate: string | Uint8Array): CertificateFacts {
  const der =
    typeof certificate === "string" ? fromPem(certificate, "CERTIFICATE") : Buffer.from(certificate);
  const cert = new x509.X509Certificate(new Uint8Array(der));
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const spiffeId = san?.names.items.find((n) => n.type === "url" && n.value.startsWith("spiffe://"))?.value;
  let identity: SpiffeIdentity | undefined;
  try {
    identity = spiffeId ? parseSpiffeId(spiffeId) : undefined;
  } catch {
    identity = undefined;
  }
  const claims = readClaimExtensions(
    cert.extensions.map((e) => ({ oid: e.type, value: new Uint8Array(e.value) })),
  );
  const basic = cert.getExtension(x509.BasicConstraintsExtension);
  return {
    serialHex: cert.serialNumber.toLowerCase(),
    subjectCommonName: cert.subjectName.getField("CN")[0],
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    fingerprintSha256: fingerprintSha256(der),
    isCa: basic?.ca ?? false,
    spiffeId,
    identity,
    organization: claims.organization,
    grant: claims.grant,
    kindExtension: claims.kind,
    clusterExtension: claims.cluster,
  };
}

/** True when `leafPem` chains to one of the roots in `bundlePem` through `chainPem` (signatures and dates). */
export function verifyChain(
  leafPem: string,
  chainPem: string[],
  bundlePem: string,
  at = new Date(),
): boolean {
  const certs = [leafPem, ...chainPem].map((p) => new NodeX509Certificate(p));
  const roots = splitCertificates(bundlePem).map((p) => new NodeX509Certificate(p));
  for (const cert of certs) {
    if (new Date(cert.validFrom) > at || new Date(cert.validTo) < at) return false;
  }
  for (let i = 0; i < certs.length; i++) {
    const cert = certs[i]!;
    const next = certs[i + 1];
    if (next) {
      if (!cert.checkIssued(next) || !cert.verify(next.publicKey)) return false;
      continue;
    }
    return roots.some((root) => cert.checkIssued(root) && cert.verify(root.publicKey));
  }
  return false;
}
