// Session reports: how many heartbeat, workload-status and probe reports a second the registry takes in
// (each durably written, then acknowledged), and the ack latency at a steady offered load. Nodes are real
// mTLS Sessions to the registry process. Baseline measured in the same run: raw multi-row INSERTs of as
// many rows of the same shape into a scratch table of the same Postgres, from as many connections as the
// registry's pool, i.e. the floor of "durably written".
//
//   npm run bench:reports -w @fabric/bench     BENCH_QUICK=1 for the CI smoke
//   knobs: BENCH_NODES (default 100), BENCH_WINDOW (unacknowledged reports per session, default 500),
//          BENCH_SECONDS (per phase)
import { performance } from "node:perf_hooks";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { createPool, createRpcClient } from "@fabric/platform";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { RegistryService, type SessionRequestSchema } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import type { Fabric } from "../../test/harness/fabric.js";
import { runStandalone } from "../lib/fabric.js";
import { Pushable } from "../lib/pushable.js";
import { count, line, ms, quick, summarize } from "../lib/stats.js";

const NODES = Number(process.env.BENCH_NODES ?? (quick ? 20 : 100));
const WINDOW = Number(process.env.BENCH_WINDOW ?? 500);
const SECONDS = Number(process.env.BENCH_SECONDS ?? (quick ? 2 : 10));
const GOAL_RATE = 20_000;
const TICK_MS = 10;
const REGISTRY_POOL = 10; // the registry's default FABRIC_DB_POOL_SIZE

type Request = MessageInitShape<typeof SessionRequestSchema>;

/** The i-th report of a node: one heartbeat in five, the rest workload status and peer probes. */
function report(cluster: string, node: number, i: number): Request["payload"] {
  if (i % 5 === 0) {
    return {
      case: "heartbeat",
      value: { cpuRatio: (i % 100) / 100, memoryRatio: 0.5, connectionCount: i % 50 },
    };
  }
  if (i % 5 < 3) {
    return {
      case: "workloadStatus",
      value: {
        workloadId: `${cluster}-w-${i % 5}`,
        generation: 1n,
        state: WorkloadState.RUNNING,
        restarts: i % 3,
      },
    };
  }
  return {
    case: "probe",
    value: {
      peerNodeId: `${cluster}-n-${(node + 1 + (i % 7)) % NODES}`,
      latency: durationFromMs(5 + (i % 10)),
      lossRatio: 0,
      samples: 5,
    },
  };
}

interface Session {
  sent: bigint;
  acked: bigint;
  /** Send times of sequence numbers not yet acknowledged, oldest first. */
  pending: [bigint, number][];
  requests: Pushable<Request>;
  ended: Promise<void>;
  /** Wakes a sender waiting for window room. */
  room?: () => void;
}

export async function reports(fabric: Fabric): Promise<void> {
  console.log(
    `reports${quick ? " (quick)" : ""}: ${NODES} node sessions, window ${WINDOW}, ${SECONDS} s per phase`,
  );
  const cluster = `rep-${Date.now().toString(36)}`;
  const admin = fabric.client(RegistryService, "registry");
  await admin.createCluster({ clusterId: cluster, name: "Reports bench" });
  for (let w = 0; w < 5; w++) {
    await admin.putWorkload({
      spec: {
        id: `${cluster}-w-${w}`,
        clusterId: cluster,
        role: "rdp-worker",
        runtime: Runtime.NATIVE,
        environment: Environment.DEV,
        command: "x",
      },
    });
  }
  const asEnrollment = fabric.client(RegistryService, "registry", fabric.serviceIdentity("enrollment"));
  const sessions: Session[] = [];
  const latencies: number[] = [];
  for (let n = 0; n < NODES; n++) {
    const nodeId = `${cluster}-n-${n}`;
    await asEnrollment.registerNode({ nodeId, clusterId: cluster, joinRequestId: `jr-${nodeId}` });
    const creds = await fabric.issue({ kind: "node", id: nodeId, cluster });
    const client = createRpcClient(RegistryService, {
      url: fabric.urls.registry!.grpc,
      credentials: creds,
      expectServerId: `spiffe://${fabric.trustDomain}/service/registry`,
    });
    const requests = new Pushable<Request>();
    const session: Session = { sent: 0n, acked: 0n, pending: [], requests, ended: Promise.resolve() };
    session.ended = (async () => {
      for await (const res of client.session(requests, { timeoutMs: 0 })) {
        if (res.payload.case !== "ack") continue;
        const now = performance.now();
        session.acked = res.payload.value.ackedSeq;
        while (session.pending.length && session.pending[0]![0] <= session.acked) {
          latencies.push(now - session.pending.shift()![1]);
        }
        session.room?.();
      }
    })();
    sessions.push(session);
  }
  const send = (s: Session, node: number) => {
    s.sent += 1n;
    s.pending.push([s.sent, performance.now()]);
    s.requests.push({ seq: s.sent, payload: report(cluster, node, Number(s.sent)) });
  };

  // Phase 1, throughput: every session keeps WINDOW reports unacknowledged, as fast as acks come back.
  let running = true;
  const start = sessions.map((s) => s.acked);
  const t0 = performance.now();
  const pumps = sessions.map(async (s, node) => {
    while (running) {
      while (running && s.sent - s.acked < BigInt(WINDOW)) send(s, node);
      await new Promise<void>((resolve) => (s.room = resolve));
    }
  });
  await new Promise((r) => setTimeout(r, SECONDS * 1_000));
  const elapsed = (performance.now() - t0) / 1_000;
  const ingested = sessions.reduce((sum, s, i) => sum + Number(s.acked - start[i]!), 0);
  running = false;
  for (const s of sessions) s.room?.();
  await Promise.all(pumps);
  const saturated = summarize(latencies.splice(0));
  const rate = ingested / elapsed;
  await waitAcked(sessions);

  // Phase 2, latency: a steady offered load below saturation.
  latencies.length = 0;
  const offered = Math.min(GOAL_RATE, Math.floor(rate * 0.5));
  const perTick = (offered * TICK_MS) / 1_000;
  const ticks = (SECONDS * 1_000) / TICK_MS;
  const t1 = performance.now();
  let carry = 0;
  for (let t = 0; t < ticks; t++) {
    carry += perTick;
    for (; carry >= 1; carry -= 1) {
      const node = Math.floor(Math.random() * NODES);
      send(sessions[node]!, node);
    }
    const next = t1 + (t + 1) * TICK_MS;
    await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
  }
  await waitAcked(sessions);
  const steady = summarize(latencies);
  for (const s of sessions) s.requests.end();
  await Promise.allSettled(sessions.map((s) => s.ended));

  const raw = await rawInserts(fabric, SECONDS);
  console.log(
    `saturated: ${count(rate)} reports/s acknowledged (${count(ingested)} in ${elapsed.toFixed(1)} s); ack p50 ${ms(saturated.p50)}, p99 ${ms(saturated.p99)}`,
  );
  console.log(
    `steady ${count(offered)} reports/s offered: ack p50 ${ms(steady.p50)}, p99 ${ms(steady.p99)} (${count(steady.n)} reports)`,
  );
  console.log(
    `baseline: raw multi-row INSERT of the same rows: ${count(raw.rate)} rows/s from ${REGISTRY_POOL} connections; single-row INSERT + commit p99 ${ms(raw.singleInsert.p99)}`,
  );
  console.log(
    line("reports", `${count(rate)}/s`, `≥ ${count(GOAL_RATE)}/s`, "raw INSERT baseline", rate / raw.rate),
  );
  console.log(
    line(
      "reports ack p99",
      ms(steady.p99),
      "≤ 50 ms",
      "single-row INSERT + commit p99",
      steady.p99 / raw.singleInsert.p99,
    ),
  );
}

async function waitAcked(sessions: Session[]): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (sessions.some((s) => s.acked < s.sent)) {
    if (Date.now() > deadline) throw new Error("reports were not all acknowledged within 2 minutes");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Rows/s of 500-row INSERTs of report-shaped rows into a scratch table from REGISTRY_POOL connections, and
 * the latency of single-row INSERTs (each its own commit).
 */
async function rawInserts(
  fabric: Fabric,
  seconds: number,
): Promise<{ rate: number; singleInsert: ReturnType<typeof summarize> }> {
  const pool = createPool({ url: fabric.databaseUrl, schema: "bench_scratch", max: REGISTRY_POOL });
  try {
    await pool.query("CREATE SCHEMA IF NOT EXISTS bench_scratch");
    await pool.query(`CREATE TABLE IF NOT EXISTS bench_scratch.report_rows (
      node_id text NOT NULL, seq bigint NOT NULL, kind text NOT NULL, payload bytea NOT NULL,
      received_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (node_id, seq))`);
    const batch = 500;
    const payload = Buffer.alloc(40, 1);
    let rows = 0;
    let seq = 0;
    const end = performance.now() + seconds * 1_000;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: REGISTRY_POOL }, async (_, lane) => {
        while (performance.now() < end) {
          const seqs = Array.from({ length: batch }, () => seq++);
          await pool.query(
            `INSERT INTO bench_scratch.report_rows (node_id, seq, kind, payload)
             SELECT $1, s, 'heartbeat', $2 FROM unnest($3::bigint[]) AS s`,
            [`lane-${lane}`, payload, seqs],
          );
          rows += batch;
        }
      }),
    );
    const rate = rows / ((performance.now() - t0) / 1_000);
    // One row, one commit, one round trip: the least an acknowledged durable write can take.
    const single: number[] = [];
    for (let i = 0; i < (quick ? 200 : 1_000); i++) {
      const t = performance.now();
      await pool.query(
        "INSERT INTO bench_scratch.report_rows (node_id, seq, kind, payload) VALUES ('single', $1, 'heartbeat', $2)",
        [i, payload],
      );
      single.push(performance.now() - t);
    }
    return { rate, singleInsert: summarize(single) };
  } finally {
    await pool.query("DROP SCHEMA IF EXISTS bench_scratch CASCADE").catch(() => {});
    await pool.end();
  }
}

await runStandalone(import.meta.url, reports);
