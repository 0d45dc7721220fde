// Sustained Session load: 50 nodes together send 5,000 reports a second for 10 seconds (heartbeats,
// workload status and probes) and every one is acknowledged and durable. The registry runs as its own
// process (with the real CA, through the cross-service harness) so the load generator does not share
// its event loop. The achieved rate, ack latency and group-commit batch sizes are printed for the
// record; nothing here asserts on time.
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { createPool, type Pool } from "@fabric/platform";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startFabric, type Fabric } from "../../../test/harness/fabric.js";
import { heartbeat, openSession, type TestSession } from "./support/sessions.js";

const NODES = 50;
const RATE = 5_000; // reports per second, all nodes together
const SECONDS = 10;
const TICK_MS = 100;

let fabric: Fabric;
let pool: Pool;
const sessions: TestSession[] = [];

beforeAll(async () => {
  fabric = await startFabric({ services: ["ca", "registry"] });
  pool = createPool({ url: fabric.databaseUrl, schema: "registry", max: 2 });
  const admin = fabric.client(RegistryService, "registry");
  const enrollment = fabric.client(RegistryService, "registry", fabric.serviceIdentity("enrollment"));
  await admin.createCluster({ clusterId: "c1", name: "Load" });
  for (let w = 0; w < 5; w++) {
    await admin.putWorkload({
      spec: {
        id: `w-${w}`,
        clusterId: "c1",
        role: "rdp-worker",
        runtime: Runtime.NATIVE,
        environment: Environment.DEV,
        command: "x",
      },
    });
  }
  for (let i = 0; i < NODES; i++) {
    // Each node runs the workloads it reports on: a node may only report for workloads placed on it.
    await enrollment.registerNode({
      nodeId: `n-${i}`,
      clusterId: "c1",
      joinRequestId: `jr-${i}`,
      capabilities: ["can_run_rdp_worker"],
      grantedRoles: ["rdp-worker"],
    });
    const node = await fabric.issue({ kind: "node", id: `n-${i}`, cluster: "c1" });
    sessions.push(openSession(fabric.client(RegistryService, "registry", node)));
  }
}, 120_000);

afterAll(async () => {
  for (const s of sessions) await s.close();
  await pool?.end();
  await fabric?.close();
});

/**
 * The i-th report of node `node`: one heartbeat in five, the rest workload status and probes, with the
 * load figures moving and the rest steady, as a healthy fleet reports (state changes reach the feed at
 * once; the session tests cover that).
 */
function report(node: number, i: number) {
  if (i % 5 === 0) return heartbeat({ cpuRatio: (i % 100) / 100, connectionCount: i });
  if (i % 5 < 3) {
    return {
      case: "workloadStatus" as const,
      value: { workloadId: `w-${i % 5}`, generation: 1n, state: WorkloadState.RUNNING, restarts: 0 },
    };
  }
  return {
    case: "probe" as const,
    value: {
      peerNodeId: `n-${(node + 1 + (i % 7)) % NODES}`,
      latency: durationFromMs(10 + (i % 3) / 10),
      lossRatio: 0,
      samples: 5,
    },
  };
}

function histogram(metrics: string, name: string) {
  const value = (suffix: string) =>
    Number(new RegExp(`^${name}_${suffix}\\{[^}]*\\} (\\S+)$`, "m").exec(metrics)?.[1] ?? "0");
  return { sum: value("sum"), count: value("count") };
}

it("takes 5,000 reports a second for 10 s and loses none", async () => {
  const perTick = (RATE * TICK_MS) / 1000 / NODES;
  const sentAt = sessions.map(() => new Map<bigint, number>());
  const latencies: number[] = [];
  const started = Date.now();
  const ticks = (SECONDS * 1000) / TICK_MS;
  // Sample ack latency: the time from sending a sequence number to the first ack covering it.
  const sampler = setInterval(() => {
    const now = Date.now();
    sessions.forEach((s, i) => {
      for (const [seq, at] of sentAt[i]!) {
        if (s.acked() >= seq) {
          latencies.push(now - at);
          sentAt[i]!.delete(seq);
        }
      }
    });
  }, 5);
  for (let t = 0; t < ticks; t++) {
    sessions.forEach((s, node) => {
      for (let k = 0; k < perTick; k++) {
        const seq = s.send(report(node, t * perTick + k));
        if (k === 0) sentAt[node]!.set(seq, Date.now());
      }
    });
    const next = started + (t + 1) * TICK_MS;
    await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now())));
  }
  const sendSeconds = (Date.now() - started) / 1000;
  const total = NODES * ticks * perTick;
  await Promise.all(sessions.map((s) => s.waitAcked(BigInt(ticks * perTick), 60_000)));
  const ackedSeconds = (Date.now() - started) / 1000;
  clearInterval(sampler);

  // None lost: every report acknowledged, every one in the log exactly once, no session ended early.
  for (const s of sessions) expect(s.acked()).toBe(BigInt(ticks * perTick));
  const rows = await pool.query(
    "SELECT count(*)::int AS n, count(DISTINCT (node_id, seq))::int AS distinct_n FROM report_log",
  );
  expect(rows.rows[0]).toEqual({ n: total, distinct_n: total });
  for (const s of sessions) {
    const acks = s.responses.flatMap((r) => (r.payload.case === "ack" ? [r.payload.value.ackedSeq] : []));
    expect(acks).toEqual([...acks].sort((a, b) => (a < b ? -1 : 1)));
  }

  const metrics = await (await fetch(`${fabric.urls.registry!.http}/metrics`)).text();
  const batches = histogram(metrics, "fabric_registry_report_batch_size");
  const flush = histogram(metrics, "fabric_registry_report_flush_seconds");
  latencies.sort((a, b) => a - b);
  const pct = (p: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))];
  // Printed for the record (the report quotes it); stdout, since tests do not log.
  process.stdout.write(
    [
      `session load: ${total} reports from ${NODES} nodes`,
      `  offered ${RATE}/s for ${SECONDS} s; sent in ${sendSeconds.toFixed(2)} s, all acknowledged after ${ackedSeconds.toFixed(2)} s`,
      `  sustained ${(total / ackedSeconds).toFixed(0)} reports/s acknowledged`,
      `  group commit: ${batches.count} batches, mean ${(batches.sum / batches.count).toFixed(1)} reports/batch, mean flush ${((flush.sum / flush.count) * 1000).toFixed(2)} ms`,
      `  ack latency (sampled): p50 ${pct(50)} ms, p99 ${pct(99)} ms, max ${latencies.at(-1)} ms`,
    ].join("\n") + "\n",
  );
}, 120_000);
