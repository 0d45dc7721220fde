import { WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { NodeHealth } from "@fabric/proto/fabric/registry/v1/session_pb.js";
import type { WorkloadView } from "./supervisor/workload-runner.js";

export interface HealthInputs {
  certificate: { notBefore: Date; notAfter: Date };
  /** Why renewal was refused for good; empty when it was not. */
  renewalRefused: string;
  snapshotApplied: boolean;
  /** Why the last snapshot was refused; empty when the last one was accepted. */
  lastRefusal: string;
  routerUp: boolean;
  drained: boolean;
  workloads: WorkloadView[];
}

const TROUBLED = [WorkloadState.UNHEALTHY, WorkloadState.CRASH_LOOP, WorkloadState.FAILED];

/**
 * The node's own view of its health, for heartbeats and status: UNHEALTHY when it cannot do its job
 * (identity about to lapse or refused renewal, no verified snapshot), DEGRADED when it works with problems
 * (router away so the snapshot may be stale, drained, troubled workloads, a refused snapshot), else HEALTHY.
 */
export function nodeHealth(input: HealthInputs, now = Date.now()): { state: NodeHealth; message: string } {
  const { notBefore, notAfter } = input.certificate;
  const lifetime = notAfter.getTime() - notBefore.getTime();
  if (input.renewalRefused) return { state: NodeHealth.UNHEALTHY, message: input.renewalRefused };
  if (notAfter.getTime() - now < lifetime / 10) {
    return {
      state: NodeHealth.UNHEALTHY,
      message: "the node certificate is about to expire and has not been renewed",
    };
  }
  if (!input.snapshotApplied) {
    return { state: NodeHealth.UNHEALTHY, message: input.lastRefusal || "no verified snapshot yet" };
  }
  const problems = input.workloads
    .filter((w) => TROUBLED.includes(w.state))
    .map((w) => `${w.id} ${WorkloadState[w.state]}`);
  if (!input.routerUp) problems.unshift("router unreachable: running from the last verified snapshot");
  if (input.drained) problems.unshift("drained");
  if (input.lastRefusal) problems.push(input.lastRefusal);
  return problems.length > 0
    ? { state: NodeHealth.DEGRADED, message: problems.join("; ").slice(0, 512) }
    : { state: NodeHealth.HEALTHY, message: "" };
}
