import { existsSync } from "node:fs";
import { z } from "zod";
import { ConfigError, isValidTrustDomain, loadConfig, setting } from "@fabric/platform";

/** A list setting: a YAML sequence, or a comma-separated environment value. */
const list = z.preprocess(
  (v) =>
    typeof v === "string"
      ? v
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean)
      : v,
  z.array(z.string().min(1)),
);

/** A label map: a YAML mapping, or `k=v,k2=v2` from the environment. */
const labels = z.preprocess(
  (v) =>
    typeof v === "string"
      ? Object.fromEntries(
          v
            .split(",")
            .filter(Boolean)
            .map((pair) => {
              const at = pair.indexOf("=");
              return at < 0 ? [pair.trim(), ""] : [pair.slice(0, at).trim(), pair.slice(at + 1).trim()];
            }),
        )
      : v,
  z.record(z.string().min(1).max(63), z.string().max(255)),
);

/**
 * fabric-agent's settings: FABRIC_<NAME> in the environment over the YAML file (--config, FABRIC_CONFIG,
 * else $FABRIC_AGENT_HOME/agent.yaml when present) over these defaults; command-line flags win over all.
 */
export const agentSettings = z.object({
  /** Enrollment service (https://host:7401): Join, WaitForApproval, Renew. `--server` at enroll. */
  enrollmentUrl: setting.url().optional(),
  registryUrl: setting.url().optional(),
  routerUrl: setting.url().optional(),
  /** PEM roots trusted for the very first (anonymous) call to enrollment; after that, the stored ca.pem. */
  caBundle: setting.path().optional(),
  /** When set, the enrollment server must present spiffe://<trustDomain>/service/enrollment. */
  trustDomain: z.string().refine(isValidTrustDomain, "must be a lowercase DNS-like name").optional(),
  /** Cluster this node expects to join; Join is refused if the token belongs to another. */
  clusterId: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, "must be a cluster id")
    .optional(),
  nodeName: z
    .string()
    .regex(/^[a-z0-9-]{1,63}$/, "must be 1-63 characters of [a-z0-9-]")
    .optional(),
  capabilities: list.default([]),
  roles: list.default([]),
  region: z.string().max(64).default(""),
  labels: labels.default({}),
  /** host:port where peers reach this node's mesh listener. */
  addresses: list.default([]),
  heartbeatIntervalMs: setting.durationMs(10_000),
  /** Each workload's status is re-sent at least this often, changes at once. */
  statusReportIntervalMs: setting.durationMs(60_000),
  probeIntervalMs: setting.durationMs(30_000),
  probeTimeoutMs: setting.durationMs(2_000),
  probeSamples: z.coerce.number().int().min(1).max(20).default(3),
  /** Peers probed per round (active tier first); bounds the agent's outbound probing. */
  probeMaxPeers: z.coerce.number().int().min(0).max(256).default(16),
  reconnectBaseMs: setting.durationMs(500),
  reconnectMaxMs: setting.durationMs(30_000),
  /** Progress line period while waiting for approval when stdout is not a terminal. */
  progressIntervalMs: setting.durationMs(30_000),
  logMaxBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(10 * 1024 * 1024),
  logMaxFiles: z.coerce.number().int().min(1).max(100).default(5),
  dockerPath: z.string().min(1).default("docker"),
  /**
   * User native workloads run as when the agent is root: a name or a numeric uid. Default
   * `fabric-workload` where that user exists, else `nobody`. Never root.
   */
  workloadUser: z.string().min(1).optional(),
  /** Their group: a name or a numeric gid. Default the workload user's primary group. Never root. */
  workloadGroup: z.string().min(1).optional(),
  /** Where each workload's own directory (HOME, default working directory) is made. Default `<state dir>-workloads`. */
  workloadRoot: setting.path().optional(),
  /**
   * INSECURE, developer machines only: lets an agent that is not root run native workloads as its own
   * user, which lets them read the node's private key. Without it such an agent refuses native workloads.
   */
  insecureSameUserWorkloads: setting.bool(false),
  logLevel: setting.logLevel(),
});

export type AgentConfig = z.infer<typeof agentSettings>;
export type AgentSettingKey = keyof AgentConfig;

/** Which YAML file applies: --config, else FABRIC_CONFIG, else agent.yaml in the state directory if any. */
export function configFileFor(
  flag: string | undefined,
  env: NodeJS.ProcessEnv,
  defaultPath: string,
): string | undefined {
  if (flag) {
    if (!existsSync(flag)) throw new ConfigError([`--config: ${flag} does not exist`]);
    return flag;
  }
  if (env.FABRIC_CONFIG) return env.FABRIC_CONFIG;
  return existsSync(defaultPath) ? defaultPath : undefined;
}

/**
 * Loads the settings through the platform loader, then applies command-line values (already named by
 * their flag), each validated by the same schema so a bad flag is reported by its flag name.
 */
export function loadAgentConfig(options: {
  env?: NodeJS.ProcessEnv;
  file?: string;
  flags?: Partial<Record<AgentSettingKey, { flag: string; value: unknown }>>;
}): AgentConfig {
  const env = { ...(options.env ?? process.env) };
  if (options.file) env.FABRIC_CONFIG = options.file;
  else delete env.FABRIC_CONFIG;
  const config: Record<string, unknown> = loadConfig(agentSettings, { env });
  const problems: string[] = [];
  for (const [key, override] of Object.entries(options.flags ?? {})) {
    if (!override || override.value === undefined) continue;
    const result = agentSettings.shape[key as AgentSettingKey].safeParse(override.value);
    if (result.success) config[key] = result.data;
    else problems.push(`${override.flag}: ${result.error.issues[0]?.message ?? "invalid value"}`);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return config as AgentConfig;
}
