import { createPublicKey, verify as verifySignature, type KeyObject } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  buildSpiffeId,
  fromPem,
  isP256,
  principalFromCertificate,
  splitCertificates,
  verifyChain,
} from "@fabric/platform";
import {
  SnapshotSchema,
  type SignedSnapshot,
  type Snapshot,
} from "@fabric/proto/fabric/router/v1/router_pb.js";

export const SNAPSHOT_SIGNATURE_ALGORITHM = "ecdsa-p256-sha256";

/** A snapshot was refused; the message says why (for the log and the node's health message). */
export class SnapshotRefused extends Error {
  override name = "SnapshotRefused";
}

/** Who the agent is, which decides what it accepts. */
export interface VerifierIdentity {
  trustDomain: string;
  nodeId: string;
  clusterId: string;
  /** Roots the signer must chain to: the agent's current CA bundle. */
  caBundlePem: string;
}

export interface VerifiedSnapshot {
  envelope: SignedSnapshot;
  snapshot: Snapshot;
  /** Serial of the router certificate that signed it. */
  signerSerial: string;
}

/**
 * Verifies a SignedSnapshot before anything in it is used: the algorithm is the one the contract names,
 * the signer's chain leads to our CA bundle and its certificate is the router's service identity of our
 * trust domain, the signature covers exactly the snapshot bytes, the snapshot is for this node and
 * cluster, and its version is newer than `appliedVersion`. Throws SnapshotRefused otherwise.
 *
 * `at` is when the signer's certificates must have been valid: now for a snapshot off the wire; a
 * persisted snapshot is re-checked at the time it was generated, so the agent can keep running from it
 * after the router's short-lived certificate has expired.
 */
export function verifySignedSnapshot(
  envelope: SignedSnapshot,
  me: VerifierIdentity,
  appliedVersion: bigint,
  at: (snapshot: Snapshot) => Date = () => new Date(),
): VerifiedSnapshot {
  if (envelope.signatureAlgorithm !== SNAPSHOT_SIGNATURE_ALGORITHM) {
    throw new SnapshotRefused(
      `signature algorithm "${envelope.signatureAlgorithm}" is not ${SNAPSHOT_SIGNATURE_ALGORITHM}`,
    );
  }
  const chain = envelope.signerChainPem.flatMap(splitCertificates);
  const [signerPem, ...intermediates] = chain;
  if (!signerPem) throw new SnapshotRefused("the snapshot carries no signer certificate");

  // The signature comes first (cheap, and it authenticates the bytes before they are decoded); which
  // certificate made it is checked right after, before anything decoded is trusted.
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(signerPem);
  } catch {
    throw new SnapshotRefused("the signer certificate cannot be read");
  }
  if (!isP256(publicKey)) throw new SnapshotRefused("the signer key is not EC P-256");
  let valid = false;
  try {
    valid = verifySignature(
      "sha256",
      envelope.snapshot,
      { key: publicKey, dsaEncoding: "der" },
      envelope.signature,
    );
  } catch {
    valid = false;
  }
  if (!valid) throw new SnapshotRefused("the signature does not match the snapshot bytes");

  let snapshot: Snapshot;
  try {
    snapshot = fromBinary(SnapshotSchema, envelope.snapshot);
  } catch {
    throw new SnapshotRefused("the signed bytes are not a Snapshot");
  }

  if (!verifyChain(signerPem, intermediates, me.caBundlePem, at(snapshot))) {
    throw new SnapshotRefused("the signer's certificate chain does not lead to this node's CA bundle");
  }
  const routerId = buildSpiffeId({ trustDomain: me.trustDomain, kind: "service", id: "router" });
  let signer: string;
  let signerSerial: string;
  try {
    const principal = principalFromCertificate(fromPem(signerPem, "CERTIFICATE"), me.trustDomain);
    signer = principal.spiffeId;
    signerSerial = principal.serialHex;
  } catch (err) {
    throw new SnapshotRefused(
      `the signer is not a Fabric identity of this trust domain: ${(err as Error).message}`,
    );
  }
  if (signer !== routerId) throw new SnapshotRefused(`signed by ${signer}, not by ${routerId}`);

  if (snapshot.nodeId !== me.nodeId || snapshot.clusterId !== me.clusterId) {
    throw new SnapshotRefused(
      `the snapshot is for node "${snapshot.nodeId}" in cluster "${snapshot.clusterId}", not this node ("${me.nodeId}" in "${me.clusterId}")`,
    );
  }
  if (snapshot.version <= appliedVersion) {
    throw new SnapshotRefused(
      `version ${snapshot.version} is not newer than the applied version ${appliedVersion} (rolled back or replayed)`,
    );
  }
  return { envelope, snapshot, signerSerial };
}

/** When a snapshot says it was generated (for re-verifying a persisted one); never in the future. */
export function generatedAt(snapshot: Snapshot): Date {
  const when = snapshot.generatedAt ? timestampDate(snapshot.generatedAt) : new Date();
  return when.getTime() > Date.now() ? new Date() : when;
}
