import { createHmac, hkdfSync, sign, timingSafeEqual, verify, type KeyObject } from "node:crypto";

/**
 * The byte-exact parts of enrollment's contract that both ends compute (enrollment.proto documents them):
 * the WaitForApproval proof of key possession and the MAC over the CA bundle given to a bootstrapping
 * developer. fabric-agent and the fabric CLI import these from @fabric/enrollment.
 */

const WAIT_FOR_APPROVAL_PREFIX = "fabric-wait-for-approval:";
const BUNDLE_MAC_INFO = "fabric-dev-bootstrap-mac";

/** `fabric-wait-for-approval:` + join request id + `:` + the 32 raw challenge bytes. */
export function waitForApprovalPayload(joinRequestId: string, challenge: Uint8Array): Buffer {
  return Buffer.concat([
    Buffer.from(`${WAIT_FOR_APPROVAL_PREFIX}${joinRequestId}:`, "ascii"),
    Buffer.from(challenge),
  ]);
}

/** The agent's side: an ECDSA P-256 / SHA-256 signature, DER-encoded, with the key of its CSR. */
export function signWaitForApproval(
  privateKeyPem: string,
  joinRequestId: string,
  challenge: Uint8Array,
): Buffer {
  return sign("sha256", waitForApprovalPayload(joinRequestId, challenge), {
    key: privateKeyPem,
    dsaEncoding: "der",
  });
}

/** Enrollment's side: true when `signature` was made by the CSR's key over this request's challenge. */
export function verifyWaitForApproval(
  publicKey: KeyObject,
  joinRequestId: string,
  challenge: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (signature.length === 0 || signature.length > 80) return false;
  try {
    return verify(
      "sha256",
      waitForApprovalPayload(joinRequestId, challenge),
      { key: publicKey, dsaEncoding: "der" },
      signature,
    );
  } catch {
    return false;
  }
}

/** HKDF-SHA256(ikm = PIN digits, salt = developer id, info = `fabric-dev-bootstrap-mac`, 32 bytes). */
function bundleMacKey(pin: string, developerId: string): Buffer {
  return Buffer.from(
    hkdfSync("sha256", Buffer.from(pin, "ascii"), Buffer.from(developerId, "ascii"), BUNDLE_MAC_INFO, 32),
  );
}

/** HMAC-SHA256 over the exact UTF-8 bytes of the CA bundle PEM, keyed from the PIN. */
export function developerBundleMac(pin: string, developerId: string, caBundlePem: string): Buffer {
  return createHmac("sha256", bundleMacKey(pin, developerId)).update(caBundlePem, "utf8").digest();
}

/** The CLI's side: constant-time check that the bundle came from the server that knew the PIN. */
export function verifyDeveloperBundleMac(
  pin: string,
  developerId: string,
  caBundlePem: string,
  mac: Uint8Array,
): boolean {
  const expected = developerBundleMac(pin, developerId, caBundlePem);
  return mac.length === expected.length && timingSafeEqual(expected, mac);
}
