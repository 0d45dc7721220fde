import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  generateP256KeyPair,
  inspectCertificate,
  isValidTrustDomain,
  issueCaCertificate,
  type ServiceName,
} from "@fabric/platform";
import { CA_FILES, CA_META_FORMAT, caExists, type CaMeta } from "./ca-directory.js";
import { MIN_PASSPHRASE_LENGTH, sealPrivateKey } from "./key-custody.js";
import { OfflineIssuer } from "./offline-issuance.js";

const DAY = 86_400_000;

export interface InitCaOptions {
  /** The CA directory (FABRIC_CA_DIR); must be empty or absent. */
  dir: string;
  trustDomain: string;
  /** Encrypts both CA keys; at least 12 characters. */
  passphrase: string;
  /** Default 10 years. */
  rootLifetimeMs?: number;
  /** Default 1 year. */
  intermediateLifetimeMs?: number;
  /**
   * Where the CA will serve its CRL and OCSP, written into certificates issued offline (the running CA
   * uses its own settings). Default: the CA's default plain port on 127.0.0.1.
   */
  crlUrl?: string;
  ocspUrl?: string;
}

export interface CaCertificateSummary {
  subject: string;
  fingerprintSha256: string;
  notBefore: Date;
  notAfter: Date;
}

export interface InitCaResult {
  dir: string;
  trustDomain: string;
  root: CaCertificateSummary;
  intermediate: CaCertificateSummary;
  /** Where each service identity was written. */
  serviceIdentityDirs: Record<ServiceName, string>;
}

export function summarize(pem: string): CaCertificateSummary {
  const facts = inspectCertificate(pem);
  return {
    subject: facts.subjectCommonName ?? "",
    fingerprintSha256: facts.fingerprintSha256,
    notBefore: facts.notBefore,
    notAfter: facts.notAfter,
  };
}

/**
 * Creates a CA: an ECDSA P-256 root (10 years) and intermediate (1 year, path length 0), both keys
 * encrypted under the passphrase, and the four service identities. The caller (`fabric ca init`) prints
 * the two fingerprints from the result so operators can compare them out of band.
 */
export async function initCa(options: InitCaOptions): Promise<InitCaResult> {
  if (!isValidTrustDomain(options.trustDomain)) {
    throw new Error(`trust domain "${options.trustDomain}" must be a lowercase DNS-like name`);
  }
  if (options.passphrase.length < MIN_PASSPHRASE_LENGTH) {
    throw new Error(`the CA passphrase must be at least ${MIN_PASSPHRASE_LENGTH} characters`);
  }
  if (caExists(options.dir)) throw new Error(`${options.dir} already holds a CA; refusing to overwrite it`);
  mkdirSync(options.dir, { recursive: true, mode: 0o700 });
  if (readdirSync(options.dir).length > 0) {
    throw new Error(`${options.dir} is not empty; give an empty or new directory for the CA`);
  }
  const now = Date.now();
  const td = options.trustDomain;
  const rootKey = generateP256KeyPair();
  const rootPem = await issueCaCertificate({
    commonName: `${td} Fabric root CA`,
    subjectPrivateKeyPem: rootKey.privateKeyPem,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + (options.rootLifetimeMs ?? 3650 * DAY)),
  });
  const intermediateKey = generateP256KeyPair();
  const intermediatePem = await issueCaCertificate({
    commonName: `${td} Fabric intermediate CA`,
    subjectPrivateKeyPem: intermediateKey.privateKeyPem,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + (options.intermediateLifetimeMs ?? 365 * DAY)),
    issuer: { certificatePem: rootPem, privateKeyPem: rootKey.privateKeyPem },
    pathLength: 0,
  });
  const meta: CaMeta = {
    format: CA_META_FORMAT,
    trustDomain: td,
    crlUrl: options.crlUrl ?? "http://127.0.0.1:7410/crl",
    ocspUrl: options.ocspUrl ?? "http://127.0.0.1:7410/ocsp",
    createdAt: new Date(now).toISOString(),
  };
  const write = (name: string, content: string, mode = 0o644) =>
    writeFileSync(join(options.dir, name), content, { mode });
  write(CA_FILES.rootKey, await sealPrivateKey(rootKey.privateKeyPem, options.passphrase, "root"), 0o600);
  write(
    CA_FILES.intermediateKey,
    await sealPrivateKey(intermediateKey.privateKeyPem, options.passphrase, "intermediate"),
    0o600,
  );
  write(CA_FILES.rootCertificate, rootPem);
  write(CA_FILES.intermediateCertificate, intermediatePem);
  // Written last: its presence is what marks the directory as a complete CA.
  write(CA_FILES.meta, `${JSON.stringify(meta, null, 2)}\n`);

  const issuer = await OfflineIssuer.open({ caDir: options.dir, passphrase: options.passphrase });
  return {
    dir: options.dir,
    trustDomain: td,
    root: summarize(rootPem),
    intermediate: summarize(intermediatePem),
    serviceIdentityDirs: issuer.writeServiceIdentities(),
  };
}
