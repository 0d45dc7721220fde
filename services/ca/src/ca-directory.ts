import { createPrivateKey, type KeyObject } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fingerprintSha256, fromPem, normalizePem, type ServiceName } from "@fabric/platform";
import { openPrivateKey } from "./key-custody.js";

/**
 * What `initCa` writes into a CA directory (FABRIC_CA_DIR):
 *   ca.json                 trust domain and the CRL/OCSP URLs certificates issued offline carry
 *   root.pem                root certificate (10 years)
 *   root.key.enc            root private key, encrypted (may be moved offline: the running CA never reads it)
 *   intermediate.pem        intermediate certificate (path length 0), signs every leaf
 *   intermediate.key.enc    intermediate private key, encrypted; the only key the CA needs online
 *   issued-offline.jsonl    certificates issued without the running CA (init, `fabric up`, fixtures);
 *                           the CA imports them into its inventory
 *   services/<name>/        the four service identities (identity-store layout)
 */
export const CA_FILES = {
  meta: "ca.json",
  rootCertificate: "root.pem",
  rootKey: "root.key.enc",
  intermediateCertificate: "intermediate.pem",
  intermediateKey: "intermediate.key.enc",
  offlineJournal: "issued-offline.jsonl",
} as const;

export const CA_META_FORMAT = "fabric-ca/v1";

export interface CaMeta {
  format: typeof CA_META_FORMAT;
  trustDomain: string;
  /** The revocation pointers written into certificates issued offline. */
  crlUrl: string;
  ocspUrl: string;
  createdAt: string;
}

export const serviceIdentityDir = (caDir: string, name: ServiceName) => join(caDir, "services", name);

export function caExists(caDir: string): boolean {
  return existsSync(join(caDir, CA_FILES.meta));
}

export function readCaMeta(caDir: string): CaMeta {
  const path = join(caDir, CA_FILES.meta);
  let meta: CaMeta;
  try {
    meta = JSON.parse(readFileSync(path, "utf8")) as CaMeta;
  } catch {
    throw new Error(`${caDir} holds no Fabric CA (${path} is missing or unreadable); run \`fabric ca init\``);
  }
  if (meta.format !== CA_META_FORMAT) throw new Error(`${path} is not a ${CA_META_FORMAT} file`);
  return meta;
}

export function readCaCertificate(caDir: string, which: "root" | "intermediate"): string {
  const path = join(caDir, which === "root" ? CA_FILES.rootCertificate : CA_FILES.intermediateCertificate);
  try {
    return normalizePem(readFileSync(path, "utf8"));
  } catch {
    throw new Error(`the ${which} certificate ${path} is missing or unreadable`);
  }
}

/** The public half of a CA directory plus the intermediate key: all a running or offline issuer needs. */
export interface OpenedCa {
  dir: string;
  meta: CaMeta;
  rootPem: string;
  intermediatePem: string;
  intermediateKey: KeyObject;
  rootFingerprintSha256: string;
  intermediateFingerprintSha256: string;
}

/** Reads the CA and decrypts the intermediate key; WrongPassphraseError if the passphrase is wrong. */
export async function openCa(caDir: string, passphrase: string): Promise<OpenedCa> {
  const meta = readCaMeta(caDir);
  const rootPem = readCaCertificate(caDir, "root");
  const intermediatePem = readCaCertificate(caDir, "intermediate");
  const keyPem = await openPrivateKey(join(caDir, CA_FILES.intermediateKey), passphrase, "intermediate");
  return {
    dir: caDir,
    meta,
    rootPem,
    intermediatePem,
    intermediateKey: createPrivateKey(keyPem),
    rootFingerprintSha256: fingerprintSha256(fromPem(rootPem, "CERTIFICATE")),
    intermediateFingerprintSha256: fingerprintSha256(fromPem(intermediatePem, "CERTIFICATE")),
  };
}
