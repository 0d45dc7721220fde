import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "./atomic-file.js";
import { splitCertificates } from "./pki/pem.js";
import type { TlsCredentials } from "./tls-credentials.js";

/**
 * An identity on disk, one directory per holder:
 *   key.pem    PKCS#8 private key (0600; never leaves the holder)
 *   cert.pem   the leaf certificate
 *   chain.pem  intermediates, leaf excluded
 *   ca.pem     trusted roots
 * Used for service identities, the agent's state directory and the CLI's ~/.fabric/certs/<id>/.
 */
export const IDENTITY_FILES = { key: "key.pem", cert: "cert.pem", chain: "chain.pem", ca: "ca.pem" } as const;

export function identityExists(dir: string): boolean {
  return existsSync(join(dir, IDENTITY_FILES.key)) && existsSync(join(dir, IDENTITY_FILES.cert));
}

export function loadIdentity(dir: string): TlsCredentials {
  const read = (name: string) => {
    try {
      return readFileSync(join(dir, name), "utf8");
    } catch {
      throw new Error(`identity file ${join(dir, name)} is missing or unreadable`);
    }
  };
  return {
    privateKeyPem: read(IDENTITY_FILES.key),
    certificatePem: read(IDENTITY_FILES.cert),
    chainPem: splitCertificates(
      existsSync(join(dir, IDENTITY_FILES.chain)) ? read(IDENTITY_FILES.chain) : "",
    ),
    caBundlePem: read(IDENTITY_FILES.ca),
  };
}

/**
 * Writes all four files, each atomically, the key with mode 0600, so a crash mid-write never leaves a
 * torn file. The certificate goes last: readers that see a new certificate also see its key.
 */
export function saveIdentity(dir: string, creds: TlsCredentials): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomic(join(dir, IDENTITY_FILES.key), creds.privateKeyPem, 0o600);
  writeFileAtomic(join(dir, IDENTITY_FILES.chain), creds.chainPem.join(""));
  writeFileAtomic(join(dir, IDENTITY_FILES.ca), creds.caBundlePem);
  writeFileAtomic(join(dir, IDENTITY_FILES.cert), creds.certificatePem);
}
