import { durationMs, type Duration } from "@bufbuild/protobuf/wkt";
import { invalidArgument } from "@fabric/platform";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import type { WorkloadSpec } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { labels, principalId, required, shown, slug } from "./validation.js";

/**
 * What a workload spec must satisfy before it is stored: well-formed fields, and the environment guard
 * rules — `dev` may mount, sync and reload, and its image is optional; `tst` and `pro` are immutable:
 * a container needs an image (in `pro` pinned by digest), and mounts, sync and reload are refused.
 * Every violation is InvalidArgument naming the field and the rule.
 */

const DIGEST_PINNED = /^[^\s@]+@sha256:[0-9a-f]{64}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
// Specs travel in clear to every node that runs them, so values that look like credentials are refused.
const SECRET_NAME = /(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE_KEY|API_KEY|ACCESS_KEY)/i;
const MAX_STOP_GRACE_MS = 5 * 60_000;

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
  if (spec.runtime === Runtime.CONTAINER) {
    if (!spec.image) {
      throw invalidArgument(`guard rule: ${env} workloads run an immutable image; set spec.image`);
    }
    if (env === "pro" && !DIGEST_PINNED.test(spec.image)) {
      throw invalidArgument(
        `guard rule: pro images must be pinned by digest (name@sha256:<64 lowercase hex>); spec.image is ${shown(spec.image)}`,
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
  if (spec.image && (spec.image.length > 512 || /\s/.test(spec.image))) {
    throw invalidArgument("spec.image must be an image reference without spaces, at most 512 characters");
  }
  if (spec.command.length > 4096) throw invalidArgument("spec.command must be at most 4096 characters");
  if (spec.args.length > 256 || spec.args.some((a) => a.length > 4096)) {
    throw invalidArgument("spec.args may hold at most 256 arguments of at most 4096 characters");
  }
  const envEntries = Object.entries(spec.env);
  if (envEntries.length > 128) throw invalidArgument("spec.env may hold at most 128 variables");
  for (const [name, value] of envEntries) {
    if (!ENV_NAME.test(name)) throw invalidArgument(`spec.env: ${shown(name)} is not a valid variable name`);
    if (SECRET_NAME.test(name)) {
      throw invalidArgument(
        `spec.env: ${shown(name)} looks like a secret; workload specs are distributed in clear, so never put credentials in them`,
      );
    }
    if (value.length > 8192)
      throw invalidArgument(`spec.env: ${shown(name)} must be at most 8192 characters`);
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
}

function healthCheck(spec: WorkloadSpec): void {
  const hc = spec.healthCheck;
  if (!hc) return;
  const probe = hc.probe;
  switch (probe.case) {
    case "exec":
      if (probe.value.command.length === 0)
        throw invalidArgument("spec.health_check.exec.command is required");
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
