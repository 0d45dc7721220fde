import { baseSettings, envNameOf, type ServiceName } from "@fabric/platform";
import type { z } from "zod";

/**
 * The configuration reference, computed from the ServiceDefinitions: every setting each service reads,
 * the environment variable it is read from, its default and whether it is required. What a setting
 * means lives in MEANINGS below (the zod schemas carry no descriptions); the README's table is generated
 * from both (`npm run docs:settings`), and a test fails when a setting has no meaning or the README is
 * stale.
 */
export interface SettingsSource {
  name: ServiceName;
  defaults: { grpcPort: number; httpPort: number };
  settings: z.ZodRawShape;
}

export interface SettingRow {
  key: string;
  env: string;
  /** The default as text; "" when the setting is required or optional without a default. */
  defaultValue: string;
  required: boolean;
}

/** Defaults computed from the machine at start; the reference names the rule instead of this machine's value. */
const COMPUTED_DEFAULTS: Record<string, string> = { issuanceWorkers: "CPU cores - 1" };

/** The platform runtime reads databaseUrl from DATABASE_URL before FABRIC_DATABASE_URL. */
const ENV_ALIASES: Record<string, string> = { databaseUrl: "DATABASE_URL" };

/** The environment variable a service reads a setting from. */
export function envOf(key: string): string {
  return ENV_ALIASES[key] ?? envNameOf(key);
}

/** Every setting of a service, base settings first, in declaration order. */
export function settingRows(def: SettingsSource): SettingRow[] {
  const shape: Record<string, z.ZodType> = { ...baseSettings(def.defaults), ...def.settings };
  return Object.entries(shape).map(([key, schema]) => {
    const defDescription = (schema as unknown as { def: { type: string; defaultValue?: unknown } }).def;
    const hasDefault = defDescription.type === "default";
    const value = hasDefault ? String(defDescription.defaultValue) : "";
    return {
      key,
      env: envOf(key),
      defaultValue: COMPUTED_DEFAULTS[key] ?? (key.endsWith("Ms") ? withUnit(value) : value),
      required: !schema.isOptional(),
    };
  });
}

/** Every environment variable a service process reads: its settings, FABRIC_DATABASE_URL and FABRIC_CONFIG. */
export function serviceEnvNames(def: SettingsSource): Set<string> {
  const rows = settingRows(def);
  return new Set([...rows.map((r) => r.env), ...rows.map((r) => envNameOf(r.key)), "FABRIC_CONFIG"]);
}

/** What each setting means, by setting key (the same key means the same thing in every service). */
export const MEANINGS: Record<string, string> = {
  // platform base settings (every service)
  trustDomain: "Trust domain of every identity: `spiffe://<td>/...`. Must match the CA's.",
  host: "Address both listeners bind to (`0.0.0.0` in containers).",
  grpcPort: "mTLS gRPC port (gRPC, gRPC-web and Connect; health and reflection).",
  httpPort: "Plain HTTP port: `/healthz`, `/readyz`, `/metrics` (the CA also `/crl`, `/ocsp`).",
  databaseUrl:
    "Postgres URL of the service's own unprivileged role (see Database roles). Also read as FABRIC_DATABASE_URL.",
  databaseAdminUrl:
    "Admin URL: bootstraps the service's role, schema and grants at start, then is closed (see Database roles).",
  dbPoolSize: "Connections in the service's pool.",
  identityDir:
    "The service's identity directory (`key.pem`, `cert.pem`, `chain.pem`, `ca.pem`); renewals are written back here.",
  caUrl:
    "The CA's mTLS URL: identity renewal and the revocation feed. Required by every service except the CA.",
  logLevel: "pino level: fatal, error, warn, info, debug, trace or silent.",
  traceFile: "Write OpenTelemetry spans as JSON lines to this file.",
  otlpEndpoint: "Export OpenTelemetry spans to this OTLP/HTTP endpoint.",
  auditCheckpointMs:
    "How often the service signs a checkpoint of its audit chain's new records (also at shutdown).",
  maxConcurrentStreams:
    "HTTP/2 streams one connection may hold open at once (the SETTINGS the server sends).",
  maxConnectionsPerAddress:
    "Connections one source address (an IPv6 /64) may hold; at the cap its longest-idle one is closed to make room.",
  maxHandshakesPerAddress: "TLS handshakes one source address may have in progress at once.",
  maxAnonymousConnectionsPerAddress: "Connections without a client certificate one source address may hold.",
  maxAnonymousStreamsPerAddress:
    "Streams without a client certificate one source address may hold open, across its connections.",
  // ca
  caDir:
    "The CA directory `fabric ca init` wrote (certificates, encrypted keys). The root key may be moved away.",
  caPassphrase: "Passphrase of the CA keys. Exactly one of this and FABRIC_CA_PASSPHRASE_FILE.",
  caPassphraseFile: "File holding the passphrase of the CA keys (trailing newline ignored).",
  crlUrl:
    "CRL URL written into certificates and returned by GetTrustBundle. Default `http://<host>:<http port>/crl`.",
  ocspUrl: "OCSP responder URL likewise. Default `http://<host>:<http port>/ocsp`.",
  crlRefreshMs: "Scheduled CRL rebuild period; its nextUpdate is twice this.",
  crlDebounceMs: "Revocations within this window share one CRL rebuild.",
  ocspValidityMs: "nextUpdate of OCSP answers.",
  nodeDefaultLifetimeMs: "Node certificate lifetime when none is asked for.",
  nodeMaxLifetimeMs: "Longest node certificate the CA signs.",
  userDefaultLifetimeMs: "Developer certificate lifetime when none is asked for.",
  userMaxLifetimeMs: "Longest developer certificate the CA signs.",
  adminDefaultLifetimeMs: "Admin certificate lifetime when none is asked for.",
  adminMaxLifetimeMs: "Longest admin certificate the CA signs.",
  serviceLifetimeMs: "Service certificate lifetime (default and cap), the CA's own included.",
  issuanceBatchMax: "Most certificates recorded per group-commit transaction.",
  issuanceWorkers: "Worker threads verifying CSRs and signing (0 = on the main thread).",
  // enrollment
  registryUrl:
    "The registry's mTLS URL (enrollment: RegisterNode at approval; router: the change feed it follows). Required.",
  routerUrl: "The router's mTLS URL, announced to developers as the default router endpoint.",
  joinTokenDefaultTtlMs: "Lifetime of a join token created without a TTL.",
  joinTokenMaxTtlMs: "Longest join token TTL accepted (at most 24 h).",
  expiredTokenRetentionMs:
    "How long expired tokens are kept (late joins are told “expired”) before deletion.",
  cleanupIntervalMs: "Period of the job expiring undecided join requests and deleting old tokens.",
  joinRequestTtlMs: "How long a join request waits for a decision, and an approved one can be collected.",
  waitPollIntervalMs: "WaitForApproval poll for decisions made by another replica.",
  reconcileIntervalMs: "Period of the reconciler completing approvals interrupted by a crash or outage.",
  nodeCertificateLifetimeMs: "Node certificate lifetime when an approval sets none (at most 90 days).",
  userCertificateLifetimeMs:
    "Developer certificate lifetime from BootstrapDeveloper and renewals that ask for none (at most 90 days).",
  maxEnrollmentAgeMs:
    "How long after first enrollment an identity may keep renewing before it must enroll again.",
  pinTtlMs: "Validity of a developer PIN.",
  pinMaxAttempts: "Wrong PINs after which a developer's PIN is locked until a new one is issued.",
  addressRatePerSecond:
    "Failed anonymous calls (Join, WaitForApproval, BootstrapDeveloper) per second per source IP; calls that prove their credential give their token back.",
  addressBurst: "Burst of failed anonymous calls per source IP.",
  credentialRatePerSecond:
    "Wrong secrets per second per join token or join request, from any address; never holds back the right secret (developer ids: the PIN lockout).",
  credentialBurst: "Burst of wrong secrets per credential.",
  publicCaUrl: "CA endpoint announced to developers' CLIs. Default: FABRIC_CA_URL.",
  publicEnrollmentUrl: "Enrollment endpoint announced to developers' CLIs. Default: this service's own URL.",
  publicRegistryUrl: "Registry endpoint announced to developers' CLIs. Default: FABRIC_REGISTRY_URL.",
  publicRouterUrl: "Router endpoint announced to developers' CLIs. Default: FABRIC_ROUTER_URL.",
  // registry
  heartbeatIntervalMs: "How often agents heartbeat; three missed intervals mark a node offline.",
  reportFlushMs: "How long a Session report waits for its batch.",
  reportBatchMax: "Session reports written per transaction at most.",
  changeCoalesceMs:
    "Load-only updates of a node, status or probe pair reach the change feed at most this often.",
  reportRetentionMs: "How long the append-only report log keeps a report.",
  changeRetentionMs: "How long WatchChanges can resume from a version.",
  retentionSweepMs: "How often expired reports and changes are deleted.",
  feedPollMs: "Safety-net poll of the change feed besides LISTEN/NOTIFY.",
  feedMemoryChanges: "Recent changes kept in memory for resuming watchers.",
  // router
  debounceMs: "How long registry changes are collected before affected snapshots are recomputed.",
  explainExcludedLimit: "Most excluded cluster members one Explain answer lists.",
};

/** A millisecond default with its largest whole unit: "2592000000 (30 d)"; small values stay as they are. */
function withUnit(ms: string): string {
  const units: [number, string][] = [
    [86_400_000, "d"],
    [3_600_000, "h"],
    [60_000, "min"],
    [1_000, "s"],
  ];
  const unit = units.find(([size]) => Number(ms) > 0 && Number(ms) % size === 0);
  return unit ? `${ms} (${Number(ms) / unit[0]} ${unit[1]})` : ms;
}

/** A markdown table of settings: variable, default, meaning. */
export function settingsTable(
  rows: { env: string; defaultValue: string; required: boolean; meaning: string }[],
): string {
  const lines = [
    "| variable | default | meaning |",
    "| --- | --- | --- |",
    ...rows.map(
      (r) =>
        `| \`${r.env}\` | ${r.required ? "**required**" : r.defaultValue === "" ? "—" : `\`${r.defaultValue}\``} | ${r.meaning} |`,
    ),
  ];
  return `${lines.join("\n")}\n`;
}

/**
 * The README's configuration reference: the base settings every service reads (ports per service), then
 * each service's own settings.
 */
export function settingsReference(defs: SettingsSource[]): string {
  const meaningOf = (key: string) => {
    const meaning = MEANINGS[key];
    if (!meaning) throw new Error(`setting "${key}" has no meaning in cli/src/reference/service-settings.ts`);
    return meaning;
  };
  const baseKeys = Object.keys(baseSettings({ grpcPort: 0, httpPort: 0 }));
  const base = baseKeys.map((key) => {
    const perService = defs.map((d) => ({ name: d.name, row: settingRows(d).find((r) => r.key === key)! }));
    const defaults = new Set(perService.map((p) => p.row.defaultValue));
    return {
      env: perService[0]!.row.env,
      required: perService[0]!.row.required,
      defaultValue:
        defaults.size === 1
          ? perService[0]!.row.defaultValue
          : perService.map((p) => `${p.name} ${p.row.defaultValue}`).join(", "),
      meaning: meaningOf(key),
    };
  });
  const sections = [
    "Every service reads these (or their camelCase keys in the YAML file FABRIC_CONFIG names):\n",
    settingsTable(base),
    ...defs.map((d) => {
      const own = settingRows(d).filter((r) => !baseKeys.includes(r.key));
      return `\n**${d.name}**\n\n${settingsTable(own.map((r) => ({ ...r, meaning: meaningOf(r.key) })))}`;
    }),
  ];
  return sections.join("");
}
