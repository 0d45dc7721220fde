import {
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import { join } from "node:path";
import {
  identityExists,
  inspectCertificate,
  loadIdentity,
  saveIdentity,
  writeFileAtomic,
  type TlsCredentials,
} from "@fabric/platform";
import { AgentExit, EXIT } from "./exit-codes.js";
import { ownDirectory } from "./host-paths.js";

/**
 * The agent's state directory ($FABRIC_AGENT_HOME, else /var/lib/fabric-agent), mode 0700 and owned by
 * the agent; no workload runs as its owner, so nothing in it is readable by a workload:
 *
 *   agent.yaml              operator-written configuration (optional)
 *   identity -> identities/<serial>
 *                           the current identity (key.pem 0600, cert.pem, chain.pem, ca.pem); a renewal
 *                           writes a new directory and swaps this link with one rename, so a crash never
 *                           pairs a new key with an old certificate
 *   identities/pending/     key of an enrollment still waiting for approval
 *   enrollment.json         that pending enrollment (join request id and challenge; no token)
 *   node.json               node id, cluster, trust domain and control-plane endpoints
 *   snapshot.bin            the last verified SignedSnapshot, exactly as received
 *   snapshot-version.json   the highest snapshot version this node has ever trusted (never lowered)
 *   status.json             what `fabric-agent status` shows, rewritten by the running agent
 *   reenroll.json           set when the identity was revoked, banned or expired: `run` refuses to start
 *   logs/<workload>.log*    workload output, size-rotated
 *
 * Beside it, `<state dir>-workloads/<workload>/` (unless workloadRoot says otherwise): each workload's
 * own directory, owned by the user it runs as.
 */
export interface AgentPaths {
  home: string;
  config: string;
  identity: string;
  identities: string;
  pendingKeyDir: string;
  pendingEnrollment: string;
  node: string;
  snapshot: string;
  snapshotHighWater: string;
  status: string;
  reenroll: string;
  logs: string;
  /** Default workload root: outside the state directory, which workloads cannot enter. */
  workloads: string;
}

export const DEFAULT_AGENT_HOME = "/var/lib/fabric-agent";

export function agentHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.FABRIC_AGENT_HOME || DEFAULT_AGENT_HOME;
}

export function agentPaths(home: string): AgentPaths {
  return {
    home,
    config: join(home, "agent.yaml"),
    identity: join(home, "identity"),
    identities: join(home, "identities"),
    pendingKeyDir: join(home, "identities", "pending"),
    pendingEnrollment: join(home, "enrollment.json"),
    node: join(home, "node.json"),
    snapshot: join(home, "snapshot.bin"),
    snapshotHighWater: join(home, "snapshot-version.json"),
    status: join(home, "status.json"),
    reenroll: join(home, "reenroll.json"),
    logs: join(home, "logs"),
    workloads: `${home.replace(/\/+$/, "")}-workloads`,
  };
}

/** Creates the state directory, or makes sure it is the agent's own and 0700 (refusing one that is not). */
export function ensureStateDir(paths: AgentPaths): void {
  try {
    ownDirectory(paths.home, 0o700);
  } catch (err) {
    throw new AgentExit(EXIT.FAILURE, `state directory: ${(err as Error).message}`);
  }
  mkdirSync(paths.identities, { recursive: true, mode: 0o700 });
}

/** Where the control plane is, as learned at enrollment (flags or config) and stored beside the identity. */
export interface Endpoints {
  enrollmentUrl: string;
  registryUrl?: string;
  routerUrl?: string;
}

/** Who this node is. The certificate is authoritative; this file saves re-deriving it and holds endpoints. */
export interface NodeRecord {
  nodeId: string;
  clusterId: string;
  trustDomain: string;
  spiffeId: string;
  grantedRoles: string[];
  endpoints: Endpoints;
  enrolledAt: string;
}

export function readNodeRecord(paths: AgentPaths): NodeRecord | undefined {
  if (!existsSync(paths.node)) return undefined;
  return JSON.parse(readFileSync(paths.node, "utf8")) as NodeRecord;
}

export function writeNodeRecord(paths: AgentPaths, record: NodeRecord): void {
  writeFileAtomic(paths.node, `${JSON.stringify(record, null, 2)}\n`, 0o600);
}

export function hasIdentity(paths: AgentPaths): boolean {
  return identityExists(paths.identity);
}

export function loadCurrentIdentity(paths: AgentPaths): TlsCredentials {
  return loadIdentity(paths.identity);
}

/**
 * Stores a new identity beside the current one and makes it current with a single rename of the
 * `identity` link; older identity directories are removed afterwards.
 */
export function installIdentity(paths: AgentPaths, creds: TlsCredentials): void {
  ensureStateDir(paths);
  const serial = inspectCertificate(creds.certificatePem).serialHex;
  const name = `${serial}-${Date.now()}`;
  saveIdentity(join(paths.identities, name), creds);
  const tmpLink = `${paths.identity}.${process.pid}.tmp`;
  rmSync(tmpLink, { force: true });
  symlinkSync(join("identities", name), tmpLink);
  renameSync(tmpLink, paths.identity);
  for (const entry of readdirSync(paths.identities)) {
    if (entry !== name && entry !== "pending") {
      rmSync(join(paths.identities, entry), { recursive: true, force: true });
    }
  }
}

/** Removes the identity and everything derived from it (before a forced re-enrollment). */
export function forgetIdentity(paths: AgentPaths): void {
  if (existsSync(paths.identity) || isLink(paths.identity)) {
    if (isLink(paths.identity)) {
      const target = join(paths.home, readlinkSync(paths.identity));
      rmSync(paths.identity, { force: true });
      rmSync(target, { recursive: true, force: true });
    } else {
      rmSync(paths.identity, { recursive: true, force: true });
    }
  }
  // The snapshot high-water mark belongs to the identity it was trusted under: a new enrollment (maybe
  // into another Fabric, whose versions start again) begins without one.
  for (const file of [paths.node, paths.snapshot, paths.snapshotHighWater, paths.status, paths.reenroll])
    rmSync(file, { force: true });
}

/** Why the current identity can no longer be used, recorded so a restarted agent does not try again. */
export interface ReenrollMarker {
  serial: string;
  reason: string;
  at: string;
}

export function markReenrollRequired(paths: AgentPaths, marker: ReenrollMarker): void {
  writeFileAtomic(paths.reenroll, `${JSON.stringify(marker, null, 2)}\n`, 0o600);
}

export function readReenrollMarker(paths: AgentPaths): ReenrollMarker | undefined {
  if (!existsSync(paths.reenroll)) return undefined;
  return JSON.parse(readFileSync(paths.reenroll, "utf8")) as ReenrollMarker;
}

function isLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}
