import { createPublicKey, verify, type KeyObject } from "node:crypto";
import { describePublicKey, invalidArgument, isP256, pemBlocks } from "@fabric/platform";
import { DerError, childrenOf, decodeObjectIdentifier, rawOf, readTlv, valueOf } from "./der.js";

/** SignRequest.csr_pem limit (ca.proto). */
export const MAX_CSR_PEM_BYTES = 16 * 1024;

// ECDSA signature algorithms a P-256 key may have signed its CSR with.
const ECDSA_HASHES: Record<string, string> = {
  "1.2.840.10045.4.3.2": "sha256",
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
};

export const ACCEPTED_KEYS = "ECDSA P-256 (prime256v1) keys, CSR signed with ecdsa-with-SHA256";

export interface VerifiedKey {
  /** DER SubjectPublicKeyInfo, copied verbatim into the certificate. */
  spki: Buffer;
  publicKey: KeyObject;
}

/**
 * Parses a PKCS#10 CSR with a minimal DER walk and checks proof of possession with node:crypto (the
 * generic @peculiar parse costs ~1.3 ms per CSR, which would dominate issuance). Only the public key and
 * the self-signature are used: the subject and requested extensions are deliberately never read.
 * Throws InvalidArgument with a message saying what to fix.
 */
export function verifyCsrPem(csrPem: string): VerifiedKey {
  if (Buffer.byteLength(csrPem) > MAX_CSR_PEM_BYTES) {
    throw invalidArgument(`csr_pem is larger than ${MAX_CSR_PEM_BYTES} bytes; send one PEM CSR`);
  }
  const [der] = pemBlocks(csrPem, "CERTIFICATE REQUEST");
  if (!der) {
    throw invalidArgument("csr_pem must hold a PEM PKCS#10 request (-----BEGIN CERTIFICATE REQUEST-----)");
  }
  let info: Buffer;
  let spki: Buffer;
  let algorithm: string;
  let signature: Buffer;
  try {
    const top = readTlv(der, 0);
    if (top.tag !== 0x30 || top.end !== der.length) throw new DerError("not one SEQUENCE");
    const [cri, algId, sig] = childrenOf(der, top);
    if (!cri || !algId || !sig || cri.tag !== 0x30 || algId.tag !== 0x30 || sig.tag !== 0x03) {
      throw new DerError("not a CertificationRequest");
    }
    const [, subject, keyInfo] = childrenOf(der, cri);
    if (!subject || !keyInfo || keyInfo.tag !== 0x30) throw new DerError("no subjectPKInfo");
    const [oid] = childrenOf(der, algId);
    if (!oid || oid.tag !== 0x06) throw new DerError("no signature algorithm");
    const bits = valueOf(der, sig);
    if (bits[0] !== 0) throw new DerError("signature BIT STRING has unused bits");
    info = rawOf(der, cri);
    spki = Buffer.from(rawOf(der, keyInfo));
    algorithm = decodeObjectIdentifier(valueOf(der, oid));
    signature = bits.subarray(1);
  } catch (err) {
    if (err instanceof DerError) {
      throw invalidArgument(`csr_pem is not a well-formed PKCS#10 request (${err.message})`);
    }
    throw err;
  }
  const point = uncompressedP256Point(spki);
  let publicKey: KeyObject;
  try {
    publicKey = point ? importP256Point(point) : createPublicKey({ key: spki, format: "der", type: "spki" });
  } catch {
    throw invalidArgument(`the CSR's public key cannot be read; Fabric accepts ${ACCEPTED_KEYS}`);
  }
  // A key imported from P-256 coordinates is a P-256 key with a finite point by construction; any other
  // encoding is checked, so the refusal can say what the key is.
  if (!point && !isP256(publicKey)) {
    throw invalidArgument(
      `the CSR's key is ${describePublicKey(publicKey)}; Fabric accepts only ${ACCEPTED_KEYS}`,
    );
  }
  const hash = ECDSA_HASHES[algorithm];
  if (!hash) {
    throw invalidArgument(
      `the CSR is signed with algorithm ${algorithm}; Fabric accepts only ${ACCEPTED_KEYS}`,
    );
  }
  let valid = false;
  try {
    valid = verify(hash, info, publicKey, signature);
  } catch {
    valid = false; // a malformed signature encoding
  }
  if (!valid) {
    throw invalidArgument(
      "the CSR's signature does not verify: it must be signed by the private key whose public key it carries",
    );
  }
  return { spki, publicKey };
}

// SubjectPublicKeyInfo of an uncompressed P-256 key, up to the 65-byte point.
const P256_SPKI_PREFIX = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex");

/** The 04 || X || Y point of an SPKI that is an uncompressed P-256 key (all Fabric's keys), else undefined. */
function uncompressedP256Point(spki: Buffer): Buffer | undefined {
  if (spki.length !== P256_SPKI_PREFIX.length + 65) return undefined;
  if (!spki.subarray(0, P256_SPKI_PREFIX.length).equals(P256_SPKI_PREFIX)) return undefined;
  const point = spki.subarray(P256_SPKI_PREFIX.length);
  return point[0] === 0x04 ? point : undefined;
}

/**
 * A KeyObject for a P-256 point, imported as JWK coordinates: that skips OpenSSL 3's generic DER decoder
 * and costs about half as much. OpenSSL still refuses a point that is not on the curve.
 */
function importP256Point(point: Buffer): KeyObject {
  return createPublicKey({
    key: {
      kty: "EC",
      crv: "P-256",
      x: point.subarray(1, 33).toString("base64url"),
      y: point.subarray(33).toString("base64url"),
    },
    format: "jwk",
  });
}
