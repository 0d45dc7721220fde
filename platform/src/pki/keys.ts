import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  webcrypto,
  type KeyObject,
} from "node:crypto";

export const EC_P256 = { name: "ECDSA", namedCurve: "P-256" } as const;
export const ECDSA_SHA256 = { name: "ECDSA", hash: "SHA-256" } as const;

/** A P-256 key pair as PEM: PKCS#8 private key, SPKI public key. */
export interface KeyPairPem {
  privateKeyPem: string;
  publicKeyPem: string;
}

export function generateP256KeyPair(): KeyPairPem {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return {
    privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicKeyPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

export function publicKeyPemOf(privateKeyPem: string): string {
  return createPublicKey(createPrivateKey(privateKeyPem)).export({ type: "spki", format: "pem" }).toString();
}

/** WebCrypto keys for @peculiar/x509, from PEM. */
export async function toCryptoKeyPair(privateKeyPem: string): Promise<CryptoKeyPair> {
  const priv = createPrivateKey(privateKeyPem);
  const pub = createPublicKey(priv);
  const privateKey = await webcrypto.subtle.importKey(
    "pkcs8",
    priv.export({ type: "pkcs8", format: "der" }),
    EC_P256,
    true,
    ["sign"],
  );
  const publicKey = await webcrypto.subtle.importKey(
    "spki",
    pub.export({ type: "spki", format: "der" }),
    EC_P256,
    true,
    ["verify"],
  );
  return { privateKey: privateKey as CryptoKey, publicKey: publicKey as CryptoKey };
}

/** Describes a public key for error messages and policy checks: "EC P-256", "RSA 2048", ... */
export function describePublicKey(key: KeyObject): string {
  if (!hasEncodablePoint(key)) return "an EC key with an invalid point";
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case "ec":
      return `EC ${curveName(details.namedCurve)}`;
    case "rsa":
    case "rsa-pss":
      return `RSA ${details.modulusLength ?? "?"}`;
    default:
      return String(key.asymmetricKeyType ?? "unknown").toUpperCase();
  }
}

export function isP256(key: KeyObject): boolean {
  return (
    key.asymmetricKeyType === "ec" &&
    hasEncodablePoint(key) &&
    curveName(key.asymmetricKeyDetails?.namedCurve) === "P-256"
  );
}

/**
 * Whether an EC key can be re-encoded. createPublicKey accepts an SPKI whose point is the point at infinity,
 * and reading asymmetricKeyDetails of such a key fails a native assertion that aborts the whole process;
 * re-encoding it throws instead, so every key from untrusted input passes this before its details are read.
 */
function hasEncodablePoint(key: KeyObject): boolean {
  if (key.asymmetricKeyType !== "ec") return true;
  try {
    key.export({ type: "spki", format: "der" });
    return true;
  } catch {
    return false;
  }
}

function curveName(nodeName: string | undefined): string {
  switch (nodeName) {
    case "prime256v1":
      return "P-256";
    case "secp384r1":
      return "P-384";
    case "secp521r1":
      return "P-521";
    default:
      return nodeName ?? "unknown curve";
  }
}
