import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
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
 * Writes all four files, each atomically (temp file + rename), key last-but-not-least with mode 0600, so a
 * crash mid-write leaves either the old or the new identity readable, never a torn file.
 */
export function saveIdentity(dir: string, creds: TlsCredentials): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const write = (name: string, content: string, mode: number) => {
    const tmp = join(dir, `.${name}.tmp`);
    writeFileSync(tmp, content, { mode });
    chmodSync(tmp, mode);
    renameSync(tmp, join(dir, name));
  };
  write(IDENTITY_FILES.key, creds.privateKeyPem, 0o600);
  write(IDENTITY_FILES.chain, creds.chainPem.join(""), 0o644);
  write(IDENTITY_FILES.ca, creds.caBundlePem, 0o644);
  write(IDENTITY_FILES.cert, creds.certificatePem, 0o644);
}
