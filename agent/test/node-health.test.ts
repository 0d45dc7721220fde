import { WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { NodeHealth } from "@fabric/proto/fabric/registry/v1/session_pb.js";
import { describe, expect, it } from "vitest";
import { nodeHealth, type HealthInputs } from "../src/node-health.js";
import type { WorkloadView } from "../src/supervisor/workload-runner.js";

const now = Date.parse("2026-01-10T00:00:00Z");
const day = 86_400_000;
const base: HealthInputs = {
  certificate: { notBefore: new Date(now - day), notAfter: new Date(now + 29 * day) },
  renewalRefused: "",
  snapshotApplied: true,
  lastRefusal: "",
  routerUp: true,
  drained: false,
  workloads: [],
};
const w = (id: string, state: WorkloadState) => ({ id, state }) as WorkloadView;

describe("the node's view of its health", () => {
  it("is healthy with a fresh identity, a snapshot, the router and well workloads", () => {
    expect(nodeHealth({ ...base, workloads: [w("a", WorkloadState.HEALTHY)] }, now)).toEqual({
      state: NodeHealth.HEALTHY,
      message: "",
    });
  });

  it("is degraded when running from a possibly stale snapshot, drained, or with troubled workloads", () => {
    const h = nodeHealth(
      {
        ...base,
        routerUp: false,
        workloads: [w("a", WorkloadState.CRASH_LOOP), w("b", WorkloadState.HEALTHY)],
      },
      now,
    );
    expect(h.state).toBe(NodeHealth.DEGRADED);
    expect(h.message).toBe("router unreachable: running from the last verified snapshot; a CRASH_LOOP");
    expect(nodeHealth({ ...base, drained: true }, now).message).toBe("drained");
  });

  it("is unhealthy without a verified snapshot, near expiry, or when renewal was refused for good", () => {
    expect(nodeHealth({ ...base, snapshotApplied: false }, now)).toEqual({
      state: NodeHealth.UNHEALTHY,
      message: "no verified snapshot yet",
    });
    const nearExpiry = { notBefore: new Date(now - 29 * day), notAfter: new Date(now + day) };
    expect(nodeHealth({ ...base, certificate: nearExpiry }, now).state).toBe(NodeHealth.UNHEALTHY);
    expect(nodeHealth({ ...base, renewalRefused: "renewal refused" }, now).message).toBe("renewal refused");
  });
});
