import { createCipheriv, createDecipheriv, randomBytes, scrypt as scryptCallback } from "node:crypto";
import { readFileSync } from "node:fs";

/**
 * CA private keys at rest: AES-256-GCM under a key derived from the operator's passphrase with scrypt.
 * The file says which key it holds ("root" or "intermediate"), and that purpose is bound into the
 * ciphertext as associated data, so swapping the two files fails like a wrong passphrase does.
 */
export const KEY_FILE_FORMAT = "fabric-ca-encrypted-key/v1";

// scrypt cost: N=2^15, r=8 (32 MiB, ~100 ms here). Stored per file so it can be raised later.
const SCRYPT = { N: 2 ** 15, r: 8, p: 1 } as const;
export const MIN_PASSPHRASE_LENGTH = 12;

interface KeyFile {
  format: typeof KEY_FILE_FORMAT;
  purpose: string;
  kdf: { name: "scrypt"; N: number; r: number; p: number; salt: string };
  cipher: "aes-256-gcm";
  iv: string;
  tag: string;
  ciphertext: string;
}

/** The passphrase did not open a key file: stop with a message that names the setting, not the secret. */
export class WrongPassphraseError extends Error {}

function deriveKey(
  passphrase: string,
  salt: Buffer,
  params: { N: number; r: number; p: number },
): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCallback(passphrase, salt, 32, { ...params, maxmem: 256 * params.N * params.r }, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  );
}

/** Encrypts a PKCS#8 PEM private key; returns the key file's text (JSON). */
export async function sealPrivateKey(
  privateKeyPem: string,
  passphrase: string,
  purpose: string,
): Promise<string> {
  const salt = randomBytes(16);
  const iv = randomBytes(12);
  const key = await deriveKey(passphrase, salt, SCRYPT);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(Buffer.from(`${KEY_FILE_FORMAT}:${purpose}`));
  const ciphertext = Buffer.concat([cipher.update(privateKeyPem, "utf8"), cipher.final()]);
  const file: KeyFile = {
    format: KEY_FILE_FORMAT,
    purpose,
    kdf: { name: "scrypt", ...SCRYPT, salt: salt.toString("base64") },
    cipher: "aes-256-gcm",
    iv: iv.toString("base64"),
    tag: cipher.getAuthTag().toString("base64"),
    ciphertext: ciphertext.toString("base64"),
  };
  return `${JSON.stringify(file, null, 2)}\n`;
}

/** Decrypts a key file written by sealPrivateKey; WrongPassphraseError when the passphrase does not fit. */
export async function openPrivateKey(path: string, passphrase: string, purpose: string): Promise<string> {
  let file: KeyFile;
  try {
    file = JSON.parse(readFileSync(path, "utf8")) as KeyFile;
  } catch (err) {
    throw new Error(`cannot read the CA key file ${path}: ${(err as Error).message}`);
  }
  if (file.format !== KEY_FILE_FORMAT || file.kdf?.name !== "scrypt" || file.cipher !== "aes-256-gcm") {
    throw new Error(`${path} is not a Fabric CA key file (${KEY_FILE_FORMAT})`);
  }
  if (file.purpose !== purpose) {
    throw new Error(`${path} holds the ${file.purpose} key, not the ${purpose} key`);
  }
  const key = await deriveKey(passphrase, Buffer.from(file.kdf.salt, "base64"), file.kdf);
  const decipher = createDecipheriv("aes-256-gcm", key, Buffer.from(file.iv, "base64"));
  decipher.setAAD(Buffer.from(`${KEY_FILE_FORMAT}:${purpose}`));
  decipher.setAuthTag(Buffer.from(file.tag, "base64"));
  try {
    return Buffer.concat([
      decipher.update(Buffer.from(file.ciphertext, "base64")),
      decipher.final(),
    ]).toString("utf8");
  } catch {
    throw new WrongPassphraseError(`the CA passphrase does not decrypt ${path}`);
  }
}

/**
 * The passphrase from exactly one source: given directly (FABRIC_CA_PASSPHRASE) or read from a file
 * (FABRIC_CA_PASSPHRASE_FILE, trailing newline dropped). Errors name the settings, never the value.
 */
export function resolvePassphrase(source: { passphrase?: string; passphraseFile?: string }): string {
  if (source.passphrase && source.passphraseFile) {
    throw new Error("set only one of FABRIC_CA_PASSPHRASE and FABRIC_CA_PASSPHRASE_FILE");
  }
  let passphrase = source.passphrase;
  if (source.passphraseFile) {
    try {
      passphrase = readFileSync(source.passphraseFile, "utf8").replace(/\r?\n$/, "");
    } catch (err) {
      throw new Error(
        `cannot read FABRIC_CA_PASSPHRASE_FILE ${source.passphraseFile}: ${(err as Error).message}`,
      );
    }
  }
  if (!passphrase) {
    throw new Error("the CA keys are encrypted: set FABRIC_CA_PASSPHRASE or FABRIC_CA_PASSPHRASE_FILE");
  }
  return passphrase;
}
