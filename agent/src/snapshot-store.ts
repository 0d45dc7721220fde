import { existsSync, readFileSync } from "node:fs";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { writeFileAtomic } from "@fabric/platform";
import { SignedSnapshotSchema, type SignedSnapshot } from "@fabric/proto/fabric/router/v1/router_pb.js";
import type { AgentPaths } from "./state-dir.js";
import {
  SnapshotRefused,
  generatedAt,
  verifySignedSnapshot,
  type VerifiedSnapshot,
  type VerifierIdentity,
} from "./snapshot-verifier.js";

/** Keeps the last verified snapshot envelope, exactly as received, so a restart can run from it offline. */
export function persistSnapshot(paths: AgentPaths, envelope: SignedSnapshot): void {
  writeFileAtomic(paths.snapshot, toBinary(SignedSnapshotSchema, envelope), 0o600);
}

/**
 * The persisted snapshot, verified again as if it had just arrived (a file on disk is not trusted more
 * than the wire). `undefined` when there is none; SnapshotRefused when it fails verification.
 */
export function loadPersistedSnapshot(paths: AgentPaths, me: VerifierIdentity): VerifiedSnapshot | undefined {
  if (!existsSync(paths.snapshot)) return undefined;
  let envelope: SignedSnapshot;
  try {
    envelope = fromBinary(SignedSnapshotSchema, readFileSync(paths.snapshot));
  } catch {
    throw new SnapshotRefused(`${paths.snapshot} is not a SignedSnapshot`);
  }
  return verifySignedSnapshot(envelope, me, 0n, generatedAt);
}
