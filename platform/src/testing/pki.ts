import { issueCaCertificate, issueLeafCertificate } from "../pki/certificates.js";
import type { IdentityClaims } from "../pki/identity-claims.js";
import { generateP256KeyPair } from "../pki/keys.js";
import { fromPem } from "../pki/pem.js";
import { createPublicKey } from "node:crypto";
import type { TlsCredentials } from "../tls-credentials.js";

const DAY = 86_400_000;

export interface TestPki {
  trustDomain: string;
  rootPem: string;
  intermediatePem: string;
  intermediateKeyPem: string;
  /** Issues a leaf for the claims (trust domain filled in), with a fresh key. */
  issue(claims: Omit<IdentityClaims, "trustDomain">, options?: IssueOptions): Promise<TlsCredentials>;
}

export interface IssueOptions {
  notBefore?: Date;
  notAfter?: Date;
  serialHex?: string;
}

/**
 * A throwaway root → intermediate CA for tests, issuing real identity certificates of every kind with the
 * same profile the CA service uses. Services get serverAuth and 127.0.0.1/localhost SANs.
 */
export async function createTestPki(trustDomain = "fabric.test"): Promise<TestPki> {
  const now = Date.now();
  const rootKey = generateP256KeyPair();
  const rootPem = await issueCaCertificate({
    commonName: `${trustDomain} test root`,
    subjectPrivateKeyPem: rootKey.privateKeyPem,
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 365 * DAY),
  });
  const intermediateKey = generateP256KeyPair();
  const intermediatePem = await issueCaCertificate({
    commonName: `${trustDomain} test intermediate`,
    subjectPrivateKeyPem: intermediateKey.privateKeyPem,
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 180 * DAY),
    issuer: { certificatePem: rootPem, privateKeyPem: rootKey.privateKeyPem },
    pathLength: 0,
  });
  const issuer = { certificatePem: intermediatePem, privateKeyPem: intermediateKey.privateKeyPem };
  return {
    trustDomain,
    rootPem,
    intermediatePem,
    intermediateKeyPem: intermediateKey.privateKeyPem,
    async issue(claims, options = {}) {
      const key = generateP256KeyPair();
      const spki = createPublicKey(key.publicKeyPem).export({ type: "spki", format: "der" });
      const isService = claims.kind === "service";
      const certificatePem = await issueLeafCertificate({
        claims: { ...claims, trustDomain },
        subjectPublicKeySpki: spki,
        notBefore: options.notBefore ?? new Date(Date.now() - 60_000),
        notAfter: options.notAfter ?? new Date(Date.now() + DAY),
        issuer,
        ...(options.serialHex ? { serialHex: options.serialHex } : {}),
        ...(isService ? { dnsNames: ["localhost", claims.id], ipAddresses: ["127.0.0.1"] } : {}),
      });
      return {
        privateKeyPem: key.privateKeyPem,
        certificatePem,
        chainPem: [intermediatePem],
        caBundlePem: rootPem,
      };
    },
  };
}

/** DER of the first certificate in PEM credentials. */
export function certificateDer(creds: TlsCredentials): Buffer {
  return fromPem(creds.certificatePem, "CERTIFICATE");
}
