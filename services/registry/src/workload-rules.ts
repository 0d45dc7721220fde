import { durationMs, type Duration } from "@bufbuild/protobuf/wkt";
import { invalidArgument } from "@fabric/platform";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import type { WorkloadSpec } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { labels, principalId, required, shown, slug } from "./validation.js";

/**
 * What a workload spec must satisfy before it is stored: well-formed fields, and the environment guard
 * rules — `dev` may mount, sync and reload, and its image is optional; `tst` and `pro` are immutable:
 * they run a container image (in `pro` pinned by digest and run exactly as built), and mounts, sync
 * and reload are refused. Every violation is InvalidArgument naming the field and the rule.
 */

const DIGEST_PINNED = /^[^\s@]+@sha256:[0-9a-f]{64}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_STOP_GRACE_MS = 5 * 60_000;

/**
 * Environment variables that change how a process loads code or what it trusts: they would run other
 * code than the spec's command names (in pro, than the pinned image was built with) or weaken TLS while
 * the command stays the same. fabric-agent refuses the same list before it starts anything
 * (agent/src/supervisor/workload-env.ts, which says why each is there; a test keeps the two equal).
 * Compared upper-cased: curl reads only the lower-case `http_proxy`, and no workload needs a
 * differently-cased twin of these.
 */
export const LOADER_NAMES = new Set([
  // the dynamic loader and libc (glibc's unsecure-envvars list; LD_* below)
  ...["GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH"],
  ...["MALLOC_TRACE", "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS"],
  // which executable a command name is, where start-up files are read from
  ...["PATH", "HOME"],
  // interpreters and runtimes
  ...["NODE_OPTIONS", "NODE_PATH", "NODE_REPL_EXTERNAL_MODULE", "NODE_ICU_DATA"],
  ...["PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONPLATLIBDIR"],
  ...["PYTHONBREAKPOINT", "PYTHONWARNINGS", "PERL5OPT", "PERL5LIB", "PERLLIB", "PERL5DB"],
  ...["RUBYOPT", "RUBYLIB", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH"],
  // shells
  ...["BASH_ENV", "ENV", "ZDOTDIR", "PROMPT_COMMAND", "PS4", "SHELLOPTS", "BASHOPTS", "IFS", "CDPATH"],
  // programs git and ssh run
  ...["GIT_SSH", "GIT_SSH_COMMAND", "GIT_EXEC_PATH", "GIT_ASKPASS", "GIT_PROXY_COMMAND", "SSH_ASKPASS"],
  // trust
  ...["SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS", "NODE_TLS_REJECT_UNAUTHORIZED"],
  ...["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PYTHONHTTPSVERIFY", "GIT_SSL_NO_VERIFY", "GIT_SSL_CAINFO"],
  ...["SSLKEYLOGFILE", "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES"],
]);
export const LOADER_PREFIXES = ["LD_", "DYLD_", "BASH_FUNC_", "GIT_CONFIG"];

/** Whether a workload may not set this variable (proxies too: all traffic via a host the spec picks). */
export function isLoaderVariable(name: string): boolean {
  const upper = name.toUpperCase();
  return (
    LOADER_NAMES.has(upper) ||
    LOADER_PREFIXES.some((p) => upper.startsWith(p)) ||
    (upper.endsWith("_PROXY") && upper !== "NO_PROXY")
  );
}

/*
 * Specs travel in clear to every node that runs them (and to every admin who lists them), so anything
 * that looks like a credential is refused: by the variable's name, and by the look of any value.
 *
 * Names are judged word by word (split at "_" and at camelCase humps, upper-cased), so TOKENIZERS or
 * AUTHOR_NAME pass while DB_PASS, apiKey or sessionId do not.
 */
/** Anywhere in the name. */
const SECRET_NAME_PART = /PASSWORD|PASSWD|PASSPHRASE|SECRET|CREDENTIAL|PRIVATE/;
/** A whole word. */
const SECRET_WORDS = new Set([
  ...["PASS", "PWD", "KEY", "KEYS", "TOKEN", "TOKENS", "CRED", "CREDS", "AUTH", "AUTHN", "AUTHZ"],
  ...["AUTHORIZATION", "BEARER", "COOKIE", "COOKIES", "SESSION", "SESSIONID", "DSN", "SIGNING"],
  ...["SALT", "PIN", "JWT", "WEBHOOK", "WEBHOOKS", "CONNSTR"],
]);
/** The end of a word: APIKEY, ACCESSTOKEN, DBPWD, BASICAUTH, SLACKWEBHOOK. */
const SECRET_WORD_END = /(KEY|TOKEN|PWD|AUTH|COOKIE|WEBHOOK)$/;
/** Two words in a row. */
const SECRET_WORD_PAIRS = new Set(["CONN STR", "CONNECTION STRING"]);
/** Shell variables that only sound like secrets. */
const NOT_SECRET_NAMES = new Set(["PWD", "OLDPWD"]);

export function looksLikeSecretName(name: string): boolean {
  const words = name
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .toUpperCase()
    .split("_")
    .filter(Boolean);
  const upper = words.join("_");
  if (NOT_SECRET_NAMES.has(upper)) return false;
  return (
    SECRET_NAME_PART.test(upper) ||
    words.some((w) => SECRET_WORDS.has(w) || SECRET_WORD_END.test(w)) ||
    words.slice(1).some((w, i) => SECRET_WORD_PAIRS.has(`${words[i]} ${w}`))
  );
}

/** What a value looks like when it is a credential, whatever it is called. */
const SECRET_VALUES: [RegExp, string][] = [
  [/-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----/, "a PEM private key"],
  [/\/\/[^\s/?#@:]*:[^\s/?#@]+@/, "a URL with a password (user:password@host)"],
  [/(^|;)\s*(password|pwd|accountkey|sharedaccesskey)\s*=/i, "a connection string with a password"],
  [/\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{16,}/i, "an Authorization header value"],
  [/\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/, "a JWT"],
  [/\b(gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})/, "a GitHub token"],
  [/\bglpat-[A-Za-z0-9_-]{20,}/, "a GitLab token"],
  [/\bxox[abposr]-[A-Za-z0-9-]{10,}/, "a Slack token"],
  [
    /hooks\.slack\.com\/services\/|discord(app)?\.com\/api\/webhooks\//i,
    "a webhook URL (its path is the secret)",
  ],
  [/\b(AKIA|ASIA)[0-9A-Z]{16}\b/, "an AWS access key"],
  [/\b[rs]k_(live|test)_[A-Za-z0-9]{16,}/, "a Stripe key"],
  [/\bsk-(proj-|ant-)?[A-Za-z0-9_-]{32,}/, "an API secret key (sk-...)"],
  [/\bAIza[A-Za-z0-9_-]{35}/, "a Google API key"],
  [/\bnpm_[A-Za-z0-9]{36}\b/, "an npm token"],
  [/\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}/, "a SendGrid key"],
];

/** Base64 of "-----BEGIN": a PEM block encoded once more, as keys often are to fit in a variable. */
const BASE64_PEM = /LS0tLS1CRUdJTi[A-Za-z0-9+/]*={0,2}/g;

/** What kind of credential `value` looks like, or undefined. Never the value itself. */
export function secretValueKind(value: string): string | undefined {
  const decoded = [...value.matchAll(BASE64_PEM)].map((m) => Buffer.from(m[0], "base64").toString("latin1"));
  for (const text of [value, ...decoded]) {
    const kind = SECRET_VALUES.find(([pattern]) => pattern.test(text))?.[1];
    if (kind) return text === value ? kind : `${kind}, base64-encoded`;
  }
  return undefined;
}

const CLEAR_TEXT = "workload specs are distributed in clear, so never put credentials in them";

function noSecretValue(field: string, value: string): void {
  const kind = secretValueKind(value);
  if (kind) throw invalidArgument(`${field} looks like a secret (${kind}); ${CLEAR_TEXT}`);
}

const ENV_NAMES: Record<number, string> = {
  [Environment.DEV]: "dev",
  [Environment.TST]: "tst",
  [Environment.PRO]: "pro",
};

export function validateWorkloadSpec(spec: WorkloadSpec | undefined): WorkloadSpec {
  if (!spec) throw invalidArgument("spec is required");
  slug("spec.id", spec.id);
  required("spec.cluster_id", spec.clusterId);
  required("spec.role", spec.role);
  if (spec.organizationId) slug("spec.organization_id", spec.organizationId);
  if (spec.runtime === Runtime.UNSPECIFIED || !(spec.runtime in Runtime)) {
    throw invalidArgument("spec.runtime is required: RUNTIME_NATIVE or RUNTIME_CONTAINER");
  }
  const env = ENV_NAMES[spec.environment];
  if (!env)
    throw invalidArgument(
      "spec.environment is required: ENVIRONMENT_DEV, ENVIRONMENT_TST or ENVIRONMENT_PRO",
    );
  if (spec.runtime === Runtime.NATIVE && !spec.command)
    throw invalidArgument("spec.command is required for RUNTIME_NATIVE");
  guardRules(spec, env);
  wellFormed(spec);
  return spec;
}

function guardRules(spec: WorkloadSpec, env: string): void {
  if (env === "dev") return;
  // A host command is neither immutable nor pinned: tst and pro run container images only.
  if (spec.runtime !== Runtime.CONTAINER) {
    throw invalidArgument(
      `guard rule: ${env} workloads run an immutable container image; RUNTIME_NATIVE is only allowed in dev`,
    );
  }
  if (!spec.image) {
    throw invalidArgument(`guard rule: ${env} workloads run an immutable image; set spec.image`);
  }
  if (env === "pro") {
    if (!DIGEST_PINNED.test(spec.image)) {
      throw invalidArgument(
        `guard rule: pro images must be pinned by digest (name@sha256:<64 lowercase hex>); spec.image is ${shown(spec.image)}`,
      );
    }
    // The digest pins what was built; replacing what it runs would make the pin meaningless.
    const overrides = [
      spec.command && "spec.command (the entrypoint)",
      spec.args.length > 0 && "spec.args (the image's command)",
      spec.workingDir && "spec.working_dir",
    ].filter(Boolean);
    if (overrides.length > 0) {
      throw invalidArgument(
        `guard rule: a pro image runs exactly as built; leave ${overrides.join(", ")} empty`,
      );
    }
  }
  if (spec.mounts.length > 0)
    throw invalidArgument(`guard rule: mounts are only allowed in dev, not ${env} (spec.mounts)`);
  if (spec.sync) throw invalidArgument(`guard rule: sync is only allowed in dev, not ${env} (spec.sync)`);
  if (spec.reload)
    throw invalidArgument(`guard rule: reload is only allowed in dev, not ${env} (spec.reload)`);
}

function wellFormed(spec: WorkloadSpec): void {
  const ids = new Set<string>();
  for (const id of spec.nodeIds) {
    principalId("spec.node_ids", id);
    if (ids.has(id)) throw invalidArgument(`spec.node_ids lists "${id}" twice`);
    ids.add(id);
  }
  // `docker run` would read a reference starting with "-" as one of its own options (--privileged...).
  if (spec.image && (spec.image.length > 512 || /\s/.test(spec.image) || spec.image.startsWith("-"))) {
    throw invalidArgument(
      "spec.image must be an image reference without spaces, not starting with -, at most 512 characters",
    );
  }
  if (spec.command.length > 4096) throw invalidArgument("spec.command must be at most 4096 characters");
  noSecretValue("spec.command", spec.command);
  if (spec.args.length > 256 || spec.args.some((a) => a.length > 4096)) {
    throw invalidArgument("spec.args may hold at most 256 arguments of at most 4096 characters");
  }
  spec.args.forEach((arg, i) => noSecretValue(`spec.args[${i}]`, arg));
  const envEntries = Object.entries(spec.env);
  if (envEntries.length > 128) throw invalidArgument("spec.env may hold at most 128 variables");
  for (const [name, value] of envEntries) {
    if (!ENV_NAME.test(name)) throw invalidArgument(`spec.env: ${shown(name)} is not a valid variable name`);
    if (isLoaderVariable(name)) {
      throw invalidArgument(
        `spec.env: ${shown(name)} changes how the process loads code or what it trusts; workloads may not set it`,
      );
    }
    if (looksLikeSecretName(name))
      throw invalidArgument(`spec.env: ${shown(name)} looks like a secret; ${CLEAR_TEXT}`);
    if (value.length > 8192)
      throw invalidArgument(`spec.env: ${shown(name)} must be at most 8192 characters`);
    noSecretValue(`spec.env: the value of ${shown(name)}`, value);
  }
  if (spec.workingDir.length > 4096)
    throw invalidArgument("spec.working_dir must be at most 4096 characters");
  for (const mount of spec.mounts) {
    if (!mount.source.startsWith("/"))
      throw invalidArgument(`spec.mounts: source ${shown(mount.source)} must be an absolute path`);
    if (!mount.target) throw invalidArgument("spec.mounts: target is required");
  }
  if (spec.sync && !spec.sync.targetPath.startsWith("/")) {
    throw invalidArgument("spec.sync.target_path must be an absolute path on the node");
  }
  healthCheck(spec);
  restartPolicy(spec);
  const grace = ms(spec.stopGracePeriod);
  if (grace !== undefined && (grace < 0 || grace > MAX_STOP_GRACE_MS)) {
    throw invalidArgument("spec.stop_grace_period must be between 0 and 5 minutes");
  }
  labels("spec.labels", spec.labels);
  for (const [key, value] of Object.entries(spec.labels)) noSecretValue(`spec.labels: ${shown(key)}`, value);
}

function healthCheck(spec: WorkloadSpec): void {
  const hc = spec.healthCheck;
  if (!hc) return;
  const probe = hc.probe;
  switch (probe.case) {
    case "exec":
      if (probe.value.command.length === 0)
        throw invalidArgument("spec.health_check.exec.command is required");
      probe.value.command.forEach((part, i) => noSecretValue(`spec.health_check.exec.command[${i}]`, part));
      break;
    case "http":
    case "tcp":
      if (probe.value.port < 1 || probe.value.port > 65535) {
        throw invalidArgument(`spec.health_check.${probe.case}.port must be 1-65535`);
      }
      if (probe.case === "http" && probe.value.path && !probe.value.path.startsWith("/")) {
        throw invalidArgument("spec.health_check.http.path must start with /");
      }
      break;
    default:
      throw invalidArgument("spec.health_check needs exactly one probe: exec, http or tcp");
  }
  const interval = ms(hc.interval) ?? 10_000;
  const timeout = ms(hc.timeout) ?? 2_000;
  if (interval < 1_000) throw invalidArgument("spec.health_check.interval must be at least 1 s");
  if (timeout <= 0 || timeout >= interval) {
    throw invalidArgument("spec.health_check.timeout must be positive and shorter than its interval");
  }
  if ((ms(hc.initialDelay) ?? 0) < 0)
    throw invalidArgument("spec.health_check.initial_delay must not be negative");
}

function restartPolicy(spec: WorkloadSpec): void {
  const rp = spec.restartPolicy;
  if (!rp) return;
  const fields = {
    initial_backoff: ms(rp.initialBackoff),
    max_backoff: ms(rp.maxBackoff),
    crash_loop_window: ms(rp.crashLoopWindow),
    reset_after: ms(rp.resetAfter),
  };
  for (const [name, value] of Object.entries(fields)) {
    if (value !== undefined && value < 0)
      throw invalidArgument(`spec.restart_policy.${name} must not be negative`);
  }
  if (
    fields.initial_backoff !== undefined &&
    fields.max_backoff !== undefined &&
    fields.max_backoff < fields.initial_backoff
  ) {
    throw invalidArgument("spec.restart_policy.max_backoff must not be shorter than initial_backoff");
  }
}

const ms = (d: Duration | undefined): number | undefined => (d ? durationMs(d) : undefined);
