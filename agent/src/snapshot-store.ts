import { closeSync, existsSync, fsyncSync, openSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { writeFileAtomic } from "@fabric/platform";
import { SignedSnapshotSchema, type SignedSnapshot } from "@fabric/proto/fabric/router/v1/router_pb.js";
import { AgentExit, EXIT } from "./exit-codes.js";
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
  fsyncDirectory(dirname(paths.snapshot));
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

/**
 * The highest snapshot version this node has ever trusted, kept in snapshot-version.json beside the
 * snapshot. A genuinely signed but older snapshot (a restored backup, a copy planted in the state
 * directory, a replay) would bring back workloads that were removed since; every snapshot, from disk or
 * from the router, older than this mark is refused. The mark only rises, and is on disk (written
 * atomically, flushed with its directory) before the snapshot that raised it is used.
 */
export class SnapshotHighWater {
  private value: bigint;

  constructor(private readonly paths: AgentPaths) {
    this.value = readHighWater(paths.snapshotHighWater);
  }

  get version(): bigint {
    return this.value;
  }

  /** Throws SnapshotRefused for a version older than the mark. */
  check(version: bigint): void {
    if (version < this.value) {
      throw new SnapshotRefused(
        `version ${version} is older than version ${this.value}, the newest this node has trusted (rolled back or replayed)`,
      );
    }
  }

  raise(version: bigint): void {
    if (version <= this.value) return;
    writeFileAtomic(this.paths.snapshotHighWater, `${JSON.stringify({ version: String(version) })}\n`, 0o600);
    fsyncDirectory(dirname(this.paths.snapshotHighWater));
    this.value = version;
  }
}

/** 0 when there is no mark yet (a new node, or one upgraded from an agent that kept none). */
function readHighWater(path: string): bigint {
  if (!existsSync(path)) return 0n;
  let version: unknown;
  try {
    version = (JSON.parse(readFileSync(path, "utf8")) as { version?: unknown }).version;
  } catch {
    version = undefined;
  }
  if (typeof version !== "string" || !/^\d{1,20}$/.test(version)) {
    // Guessing would mean trusting snapshots of any age: an operator decides.
    throw new AgentExit(
      EXIT.FAILURE,
      `${path} does not hold a snapshot version; fabric-agent will not guess which snapshots it may trust. ` +
        "Restore it, or remove it together with snapshot.bin to take whatever the router sends next",
    );
  }
  return BigInt(version);
}

/** Makes a rename in `dir` durable: the file's own fsync does not cover its directory entry. */
function fsyncDirectory(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
