import { readFileSync } from "node:fs";
import { ConfigError } from "@fabric/platform";

/**
 * Who native workloads run as. A workload running as the agent's own user could read the node's
 * private key and everything else in the state directory, so:
 *
 * - an agent running as root runs them as a dedicated unprivileged user and group (`workloadUser`,
 *   default `fabric-workload` where that user exists, else `nobody`; `workloadGroup`, default that
 *   user's primary group), never as root;
 * - an agent that is not root cannot switch users, so it refuses native workloads (they are reported
 *   UNSUPPORTED with the reason) unless `insecureSameUserWorkloads` is set, a developer-machine setting
 *   that runs them as the agent's user and is announced at start.
 */
export type WorkloadUser =
  | { mode: "separate"; uid: number; gid: number; name: string }
  | { mode: "same-user" }
  | { mode: "refused"; reason: string };

export interface WorkloadUserSettings {
  workloadUser?: string | undefined;
  workloadGroup?: string | undefined;
  insecureSameUserWorkloads: boolean;
}

const DEFAULT_WORKLOAD_USER = "fabric-workload";
const FALLBACK_WORKLOAD_USER = "nobody";
const FALLBACK_WORKLOAD_GROUP = "nogroup";

export interface AccountFiles {
  passwd: string;
  group: string;
}

const SYSTEM_ACCOUNTS: AccountFiles = { passwd: "/etc/passwd", group: "/etc/group" };

/** Resolves the settings once at start; a bad or dangerous one is a ConfigError naming it. */
export function resolveWorkloadUser(
  settings: WorkloadUserSettings,
  agentUid: number = process.getuid?.() ?? -1,
  files: AccountFiles = SYSTEM_ACCOUNTS,
): WorkloadUser {
  if (agentUid !== 0) {
    if (settings.workloadUser !== undefined || settings.workloadGroup !== undefined) {
      throw new ConfigError([
        `workloadUser/workloadGroup: fabric-agent runs as uid ${agentUid}, not root, so it cannot run workloads as another user; run it as root`,
      ]);
    }
    if (settings.insecureSameUserWorkloads) return { mode: "same-user" };
    return {
      mode: "refused",
      reason:
        `fabric-agent runs as uid ${agentUid}, not root: it cannot run native workloads as a separate user, ` +
        "and as its own user they could read the node's private key. Run the agent as root, or on a " +
        "developer machine only set FABRIC_INSECURE_SAME_USER_WORKLOADS=true",
    };
  }
  if (settings.insecureSameUserWorkloads) {
    throw new ConfigError([
      "insecureSameUserWorkloads: fabric-agent runs as root, so same-user workloads would run as root; unset it (native workloads run as workloadUser)",
    ]);
  }
  const users = accounts(files.passwd);
  const groups = accounts(files.group);
  const userName =
    settings.workloadUser ??
    (users.has(DEFAULT_WORKLOAD_USER) ? DEFAULT_WORKLOAD_USER : FALLBACK_WORKLOAD_USER);
  const user = lookup(users, userName);
  if (!user) {
    throw new ConfigError([
      `workloadUser: there is no user "${userName}" in ${files.passwd}; create it (useradd --system --shell /usr/sbin/nologin ${DEFAULT_WORKLOAD_USER}) or give a numeric uid`,
    ]);
  }
  let gid: number | undefined;
  if (settings.workloadGroup !== undefined) {
    gid = lookup(groups, settings.workloadGroup)?.id;
    if (gid === undefined) {
      throw new ConfigError([
        `workloadGroup: there is no group "${settings.workloadGroup}" in ${files.group}; give an existing group or a numeric gid`,
      ]);
    }
  } else {
    gid = user.primaryGid ?? lookup(groups, FALLBACK_WORKLOAD_GROUP)?.id;
    if (gid === undefined) {
      throw new ConfigError([
        `workloadGroup: uid ${user.id} has no entry in ${files.passwd} and there is no "${FALLBACK_WORKLOAD_GROUP}" group; set workloadGroup`,
      ]);
    }
  }
  if (user.id === 0)
    throw new ConfigError([`workloadUser: "${userName}" is root; give an unprivileged user`]);
  if (gid === 0) throw new ConfigError(["workloadGroup: the root group; give an unprivileged group"]);
  return { mode: "separate", uid: user.id, gid, name: user.name };
}

interface Account {
  name: string;
  id: number;
  /** passwd entries only: the user's primary group. */
  primaryGid?: number;
}

/** name → entry of a passwd or group file (name:x:id:gid:...); a missing file has no entries. */
function accounts(path: string): Map<string, Account> {
  let text = "";
  try {
    text = readFileSync(path, "utf8");
  } catch {
    // no such file: only numeric ids resolve
  }
  const entries = new Map<string, Account>();
  for (const line of text.split("\n")) {
    const [name, , id, primary] = line.split(":");
    if (!name || !id || !/^\d+$/.test(id)) continue;
    entries.set(name, {
      name,
      id: Number(id),
      ...(primary && /^\d+$/.test(primary) ? { primaryGid: Number(primary) } : {}),
    });
  }
  return entries;
}

/** A name from the file, or a numeric id (with its entry when the file has one). */
function lookup(entries: Map<string, Account>, nameOrId: string): Account | undefined {
  if (!/^\d+$/.test(nameOrId)) return entries.get(nameOrId);
  const id = Number(nameOrId);
  return [...entries.values()].find((e) => e.id === id) ?? { name: nameOrId, id };
}
