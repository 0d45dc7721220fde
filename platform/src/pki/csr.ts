import { createPublicKey, type KeyObject } from "node:crypto";
import { ECDSA_SHA256, describePublicKey, isP256, toCryptoKeyPair } from "./keys.js";
import { normalizePem } from "./pem.js";
import { x509 } from "./x509.js";

export class CsrError extends Error {}

/** Builds a PKCS#10 CSR proving possession of the key. Names in it are only a hint: the CA ignores them. */
export async function buildCsr(privateKeyPem: string, commonName: string): Promise<string> {
  const keys = await toCryptoKeyPair(privateKeyPem);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [commonName] }],
    keys,
    signingAlgorithm: ECDSA_SHA256,
  });
  return normalizePem(csr.toString("pem"));
}

export interface VerifiedCsr {
  publicKey: KeyObject;
  /** DER SubjectPublicKeyInfo, as it goes into the certificate. */
  spki: Buffer;
  commonName: string | undefined;
}

/**
 * Parses a CSR, checks its self-signature (proof of possession) and that its key is P-256.
 * Throws CsrError with a message fit for an InvalidArgument reply.
 */
export async function verifyCsr(csrPem: string): Promise<VerifiedCsr> {
  try {
    return await parseAndVerify(csrPem);
  } catch (err) {
    // Whatever a hostile CSR makes the ASN.1 layer throw, the caller sees one precise refusal.
    if (err instanceof CsrError) throw err;
    throw new CsrError("csr_pem cannot be parsed as a PKCS#10 certificate request");
  }
}

async function parseAndVerify(csrPem: string): Promise<VerifiedCsr> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch {
    throw new CsrError("csr_pem is not a PEM or DER PKCS#10 certificate request");
  }
  const spki = Buffer.from(csr.publicKey.rawData);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: spki, format: "der", type: "spki" });
  } catch {
    throw new CsrError("the CSR's public key cannot be read");
  }
  if (!isP256(publicKey)) {
    throw new CsrError(`the CSR's key is ${describePublicKey(publicKey)}; Fabric accepts only EC P-256 keys`);
  }
  let valid = false;
  try {
    valid = await csr.verify();
  } catch {
    valid = false;
  }
  if (!valid) throw new CsrError("the CSR's signature does not verify: it must be signed by its own key");
  return { publicKey, spki, commonName: csr.subjectName.getField("CN")[0] };
}
