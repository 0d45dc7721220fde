// Router fan-out, for each size N of BENCH_AGENTS (default 1,000 and 10,000; quick: 200): N simulated
// agents, each with its own node certificate and registered in the registry (so the router has it in its
// model), hold RouterService.Watch over mTLS on one router process, through fabric-agent's own Watch and
// reconnect loop (agent-worker.ts, BENCH_CLIENT_THREADS threads). Then:
// 1. Memory: the router's resident memory per connected idle agent (RSS after connecting all N minus
//    before, over N; the V8 heap's share beside it). Baseline measured in the same run: a plain Node
//    HTTP/2 + TLS server with the same certificate and TLS settings holding the same N sessions from the
//    same clients (idle-server.ts). Goal ≤ 40 KiB per agent at 10,000.
// 2. Fan-out: ONE registry change every agent sees (the workload all of them run gets a new spec);
//    p50/p99 from the start of that PutWorkload to each agent holding the new generation, and the
//    router's CPU per agent. 1% of the agents verify every snapshot as fabric-agent does. Goal p99 ≤ 1 s
//    at 10,000. Baseline: the plain server writing one message of the same size to the same agents, which
//    decode it (what any server costs on this machine, the agents' side included).
// 3. Reconnect storm: the router is killed (SIGKILL), the workload changed again while it is down, and a
//    new router started on the same port; time from the kill until every agent has reconnected (with the
//    agent's backoff and jitter) and holds that change. Goal ≤ 30 s, none lost; an agent not back within
//    60 s counts as lost. Baseline: kill to the new router's readiness, the floor of any resync.
//
//   npm run bench:fanout -w @fabric/bench       BENCH_QUICK=1 for the CI smoke (200 agents, ~40 s)
//   knobs: BENCH_AGENTS (sizes, comma-separated), BENCH_CLIENT_THREADS (agent threads, default 4),
//          BENCH_RAMP (connections opened at once per thread, default 32)
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { Worker } from "node:worker_threads";
import { inspectCertificate } from "@fabric/platform";
import { freePort, spawnTs } from "@fabric/platform/testing";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { WorkloadSpecSchema } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { SnapshotSchema, WatchResponseSchema } from "@fabric/proto/fabric/router/v1/router_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { serviceIdentityDir } from "@fabric/ca";
import type { Client } from "@connectrpc/connect";
import { startFabric, type Fabric } from "../../test/harness/fabric.js";
import { count, line, ms, quick, summarize } from "../lib/stats.js";
import type { AgentWorkerData, FromWorker, ToWorker, WorkerReport } from "./agent-worker.js";

const SIZES = (process.env.BENCH_AGENTS ?? (quick ? "200" : "1000,10000")).split(",").map(Number);
const THREADS = Number(process.env.BENCH_CLIENT_THREADS ?? 4);
const RAMP = Number(process.env.BENCH_RAMP ?? 32);
/** Every 100th agent verifies each snapshot like fabric-agent: 1%. */
const VERIFY_EVERY = 100;
const REGISTER_CONCURRENCY = 32;
/** fabric-agent's reconnect defaults (agent/src/config.ts). */
const AGENT_BACKOFF = { baseMs: 500, capMs: 30_000 };
const ROLE = "fanout-agent";
/** Time for the process to settle (timers, lazy allocations) before its memory is read. */
const SETTLE_MS = quick ? 1_000 : 2_000;
const FANOUT_TIMEOUT_MS = 60_000;
/** Twice the goal: an agent not back by then counts as lost. */
const STORM_TIMEOUT_MS = 60_000;
const KiB = 1024;

const now = () => performance.timeOrigin + performance.now();
const sleep = (msec: number) => new Promise((r) => setTimeout(r, msec));
const seconds = (msec: number) => `${(msec / 1_000).toFixed(2)} s`;
const kib = (bytes: number) => `${(bytes / KiB).toFixed(1)} KiB`;

/** Resident memory of a process, from /proc (Linux). */
function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for process ${pid}`);
  return Number(m[1]) * KiB;
}

/**
 * CPU seconds (user + system, all threads) a process has used, from /proc: unlike latency, it stays
 * meaningful when the agents share the machine's cores with the router.
 */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  // fields[11] and [12] are utime and stime (stat fields 14 and 15), in clock ticks of 1/100 s.
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function metric(httpUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

/** Threads of simulated agents; the agents are split between them in order. */
class Agents {
  private readonly workers: Worker[];
  private readonly inbox = new Map<Worker, ((msg: FromWorker) => void)[]>();
  /** Every thread has loaded its code. */
  readonly started: Promise<unknown>;
  private readonly died: Promise<never>;
  private closing = false;

  constructor(fabric: Fabric, clusterId: string, workloadId: string, agents: AgentWorkerData["agents"]) {
    const per = Math.ceil(agents.length / THREADS);
    let die!: (err: Error) => void;
    this.died = new Promise<never>((_, reject) => (die = reject));
    this.died.catch(() => {});
    this.workers = [];
    for (let t = 0; t * per < agents.length; t++) {
      const workerData: AgentWorkerData = {
        trustDomain: fabric.trustDomain,
        clusterId,
        workloadId,
        agents: agents.slice(t * per, (t + 1) * per),
        verifyEvery: VERIFY_EVERY,
        rampInFlight: RAMP,
        backoff: AGENT_BACKOFF,
      };
      const worker = new Worker(new URL("./agent-worker.mjs", import.meta.url), { workerData });
      this.inbox.set(worker, []);
      worker.on("message", (msg: FromWorker) => this.inbox.get(worker)!.shift()?.(msg));
      // A thread that dies takes its agents with it: whatever waits on the threads fails.
      worker.on("error", (err) => die(err));
      worker.on("exit", (code) => {
        if (!this.closing) die(new Error(`an agent thread exited (code ${code})`));
      });
      this.workers.push(worker);
    }
    this.started = Promise.race([
      Promise.all(this.workers.map((w) => new Promise((resolve) => this.inbox.get(w)!.push(resolve)))),
      this.died,
    ]);
  }

  /** Sends to every thread; resolves with each thread's next message. */
  private all(msg: ToWorker): Promise<FromWorker[]> {
    const replies = this.workers.map(
      (w) =>
        new Promise<FromWorker>((resolve) => {
          this.inbox.get(w)!.push(resolve);
          w.postMessage(msg);
        }),
    );
    return Promise.race([Promise.all(replies), this.died]);
  }

  async connect(kind: "watch" | "idle", url: string): Promise<{ failed: number; firstError?: string }> {
    const replies = await this.all({ kind, url });
    let failed = 0;
    let firstError: string | undefined;
    for (const r of replies) {
      if (r.kind !== "connected") continue;
      failed += r.failed;
      firstError ??= r.firstError;
    }
    return { failed, ...(firstError ? { firstError } : {}) };
  }

  expect(generation: bigint): void {
    for (const w of this.workers) w.postMessage({ kind: "expect", generation } satisfies ToWorker);
  }

  /** Every agent's report once all hold the expected generation, or what there is after `timeoutMs`. */
  async report(timeoutMs: number): Promise<WorkerReport> {
    const complete = this.all({ kind: "report", now: false });
    const timer = setTimeout(() => {
      for (const w of this.workers) w.postMessage({ kind: "report", now: true } satisfies ToWorker);
    }, timeoutMs);
    const replies = await complete;
    clearTimeout(timer);
    const reports = replies.flatMap((r) => (r.kind === "report" ? [r.report] : []));
    return {
      receivedAt: reports.flatMap((r) => r.receivedAt),
      verified: reports.reduce((n, r) => n + r.verified, 0),
      refused: reports.reduce((n, r) => n + r.refused, 0),
      ...(reports.find((r) => r.firstRefusal)
        ? { firstRefusal: reports.find((r) => r.firstRefusal)!.firstRefusal! }
        : {}),
      attempts: reports.reduce((n, r) => n + r.attempts, 0),
      fatal: reports.reduce((n, r) => n + r.fatal, 0),
      uncaught: reports.reduce((n, r) => n + r.uncaught, 0),
      ...(reports.find((r) => r.firstUncaught)
        ? { firstUncaught: reports.find((r) => r.firstUncaught)!.firstUncaught! }
        : {}),
    };
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/** Registers the nodes as enrollment does after approval, each holding the role the workload runs on. */
async function registerNodes(fabric: Fabric, clusterId: string, agents: AgentWorkerData["agents"]) {
  const asEnrollment = fabric.client(RegistryService, "registry", fabric.serviceIdentity("enrollment"));
  let next = 0;
  await Promise.all(
    Array.from({ length: REGISTER_CONCURRENCY }, async () => {
      while (next < agents.length) {
        const { id, credentials } = agents[next++]!;
        await asEnrollment.registerNode({
          nodeId: id,
          nodeName: id,
          clusterId,
          facts: { hostname: id, os: "linux", region: "eu-central", addresses: [`${id}.mesh.test:7800`] },
          grantedRoles: [ROLE],
          certificateSerial: inspectCertificate(credentials.certificatePem).serialHex,
          joinRequestId: `join-${id}`,
        });
      }
    }),
  );
}

function workloadSpec(clusterId: string, id: string, note: string) {
  return create(WorkloadSpecSchema, {
    id,
    clusterId,
    role: ROLE,
    runtime: Runtime.NATIVE,
    environment: Environment.DEV,
    command: "/usr/bin/true",
    args: [note],
  });
}

function putWorkload(admin: Client<typeof RegistryService>, clusterId: string, id: string, note: string) {
  return admin.putWorkload({ spec: workloadSpec(clusterId, id, note) });
}

/** Waits until the router holds at least `snapshots` snapshots (the registered nodes are in its model). */
async function routerCaughtUp(fabric: Fabric, snapshots: number): Promise<void> {
  const deadline = Date.now() + 120_000;
  while ((await metric(fabric.urls.router!.http, "fabric_router_snapshots")) < snapshots) {
    if (Date.now() > deadline) throw new Error(`the router did not reach ${snapshots} snapshots`);
    await sleep(200);
  }
}

/** A WatchResponse as large as the router's for these agents, for the baseline server to broadcast. */
function sampleResponse(fabric: Fabric, clusterId: string, workloadId: string): Uint8Array {
  const router = fabric.serviceIdentity("router");
  const snapshot = create(SnapshotSchema, {
    nodeId: `${clusterId}-a0`,
    clusterId,
    version: 1n,
    generatedAt: timestampNow(),
    roles: [ROLE],
    workloads: [{ spec: workloadSpec(clusterId, workloadId, "v2"), generation: 2n }],
  });
  return toBinary(
    WatchResponseSchema,
    create(WatchResponseSchema, {
      signedSnapshot: {
        snapshot: toBinary(SnapshotSchema, snapshot),
        signature: randomBytes(71),
        signatureAlgorithm: "ecdsa-p256-sha256",
        signerChainPem: [router.certificatePem, ...router.chainPem],
      },
    }),
  );
}

interface Baseline {
  /** Resident memory per idle session. */
  perSession: number;
  /** Broadcast delays, ms. */
  delays: number[];
  failed: number;
  firstError?: string;
}

/** The plain HTTP/2 + TLS server, the same agents connected to it: memory per session, then a broadcast. */
async function plainBaseline(
  fabric: Fabric,
  clusterId: string,
  workloadId: string,
  agents: AgentWorkerData["agents"],
): Promise<Baseline> {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const server = await spawnTs(fileURLToPath(new URL("./idle-server.ts", import.meta.url)), {
    env: {
      FABRIC_IDENTITY_DIR: serviceIdentityDir(fabric.dir, "router"),
      FANOUT_GRPC_PORT: String(grpcPort),
      FANOUT_HTTP_PORT: String(httpPort),
    },
    readyUrl: `http://127.0.0.1:${httpPort}/readyz`,
  });
  const clients = new Agents(fabric, clusterId, workloadId, agents);
  try {
    await clients.started;
    await sleep(SETTLE_MS);
    const before = rssBytes(server.process.pid!);
    const connected = await clients.connect("idle", `https://127.0.0.1:${grpcPort}`);
    await sleep(SETTLE_MS);
    const perSession = (rssBytes(server.process.pid!) - before) / agents.length;
    const body = Buffer.from(sampleResponse(fabric, clusterId, workloadId)).toString("base64");
    clients.expect(0n);
    const t0 = now();
    await fetch(`http://127.0.0.1:${httpPort}/broadcast`, { method: "POST", body });
    const report = await clients.report(FANOUT_TIMEOUT_MS);
    const delays = report.receivedAt.filter((at) => !Number.isNaN(at)).map((at) => at - t0);
    return { perSession, delays, ...connected };
  } finally {
    await clients.close();
    await server.stop();
  }
}

async function run(fabric: Fabric, n: number, registered: number): Promise<void> {
  const clusterId = `fanout-${n}`;
  const workloadId = `fanout-${n}`;
  console.log(`\n-- ${count(n)} agents (cluster ${clusterId})`);
  const admin = fabric.client(RegistryService, "registry");
  await admin.createCluster({ clusterId, name: clusterId, region: "eu-central" });
  let generation = (await putWorkload(admin, clusterId, workloadId, "v1")).workload!.generation;

  let t = performance.now();
  const agents: AgentWorkerData["agents"] = [];
  for (let i = 0; i < n; i++) {
    const id = `${clusterId}-a${i}`;
    agents.push({ id, credentials: await fabric.issue({ kind: "node", id, cluster: clusterId }) });
  }
  const issuedMs = performance.now() - t;
  t = performance.now();
  await registerNodes(fabric, clusterId, agents);
  const registeredMs = performance.now() - t;
  await routerCaughtUp(fabric, registered + n);
  console.log(
    `setup: ${count(n)} node certificates issued in ${seconds(issuedMs)}, registered in ${seconds(registeredMs)} (${count((n * 1_000) / registeredMs)}/s)`,
  );

  // 1. Connect, then memory per idle agent.
  const routerPid = fabric.pid("router")!;
  await sleep(SETTLE_MS);
  const rssBefore = rssBytes(routerPid);
  const heapBefore = await metric(fabric.urls.router!.http, "nodejs_heap_size_used_bytes");
  const clients = new Agents(fabric, clusterId, workloadId, agents);
  try {
    await clients.started;
    t = performance.now();
    let cpu = cpuSeconds(routerPid);
    const connected = await clients.connect("watch", fabric.urls.router!.grpc);
    const connectMs = performance.now() - t;
    const connectCpu = cpuSeconds(routerPid) - cpu;
    console.log(
      `connect: ${count(n - connected.failed)} agents watching in ${seconds(connectMs)} (${count(((n - connected.failed) * 1_000) / connectMs)}/s), router CPU ${((connectCpu * 1e6) / n).toFixed(0)} µs per agent${connected.failed ? `; ${connected.failed} failed: ${connected.firstError}` : ""}`,
    );
    await sleep(SETTLE_MS);
    const perAgent = (rssBytes(routerPid) - rssBefore) / n;
    const heapPerAgent =
      ((await metric(fabric.urls.router!.http, "nodejs_heap_size_used_bytes")) - heapBefore) / n;

    // 2. Fan-out of one change.
    clients.expect(generation + 1n);
    cpu = cpuSeconds(routerPid);
    const t0 = now();
    generation = (await putWorkload(admin, clusterId, workloadId, "v2")).workload!.generation;
    const roundTrip = now() - t0;
    const fanout = await clients.report(FANOUT_TIMEOUT_MS);
    const fanoutCpu = cpuSeconds(routerPid) - cpu;
    const delays = fanout.receivedAt.filter((at) => !Number.isNaN(at)).map((at) => at - t0);
    const d = summarize(delays);

    // 3. Reconnect storm.
    clients.expect(generation + 1n);
    const k0 = now();
    await fabric.kill("router");
    generation = (await putWorkload(admin, clusterId, workloadId, "v3")).workload!.generation;
    await fabric.start("router");
    const readyMs = now() - k0;
    const storm = await clients.report(Math.max(0, STORM_TIMEOUT_MS - (now() - k0)));
    const resynced = storm.receivedAt.filter((at) => !Number.isNaN(at)).map((at) => at - k0);
    const s = summarize(resynced);
    await clients.close();

    const baseline = await plainBaseline(fabric, clusterId, workloadId, agents);
    const b = summarize(baseline.delays);

    console.log(
      line(
        "router memory per idle agent",
        `${kib(perAgent)} RSS (V8 heap ${kib(heapPerAgent)})`,
        n >= 10_000 ? "≤ 40 KiB" : undefined,
        `a plain HTTP/2 + TLS server per idle session (${kib(baseline.perSession)})`,
        perAgent / baseline.perSession,
      ),
    );
    console.log(
      line(
        "fan-out of one change",
        `p50 ${ms(d.p50)}, p99 ${ms(d.p99)}, max ${ms(d.max)}; ${count(d.n)}/${count(n)} agents got it; router CPU ${((fanoutCpu * 1e6) / n).toFixed(0)} µs per agent; PutWorkload round trip ${ms(roundTrip)}; ${fanout.verified} snapshots verified, ${fanout.refused} refused${fanout.firstRefusal ? ` (${fanout.firstRefusal})` : ""}`,
        n >= 10_000 ? "p99 ≤ 1 s" : undefined,
        `the plain server writing one message of the same size to every agent (p50 ${ms(b.p50)}, p99 ${ms(b.p99)}${b.n < n ? `, ${count(n - b.n)} missed` : ""}${baseline.failed ? `; ${baseline.failed} did not connect: ${baseline.firstError}` : ""})`,
        d.p99 / b.p99,
      ),
    );
    const lost = n - s.n;
    console.log(
      line(
        "reconnect storm",
        `${count(s.n)}/${count(n)} agents resynced${lost ? `, ${count(lost)} LOST (not back ${seconds(STORM_TIMEOUT_MS)} after the kill)` : ` ${seconds(s.max)} after the kill`}${s.n ? ` (p50 ${seconds(s.p50)}, p99 ${seconds(s.p99)})` : ""}; ${count(storm.attempts)} Watch attempts in all, ${storm.fatal} fatal, ${storm.uncaught} errors outside any call that would have crashed an agent${storm.firstUncaught ? ` (${storm.firstUncaught})` : ""}; ${storm.refused} snapshots refused`,
        "≤ 30 s, none lost",
        `kill to the new router's readiness (${seconds(readyMs)})`,
        (s.n === n ? s.max : STORM_TIMEOUT_MS) / readyMs,
      ),
    );
  } finally {
    await clients.close();
  }
}

const started = performance.now();
const fabric = await startFabric({
  services: ["ca", "registry", "router"],
  env: {
    ca: { FABRIC_LOG_LEVEL: "error" },
    registry: { FABRIC_LOG_LEVEL: "error" },
    router: {
      FABRIC_LOG_LEVEL: "error",
      // Every agent connects from 127.0.0.1, and the reconnect storm handshakes them all at once: the
      // per-address caps that stop one attacker's address must let this one address hold 10,000 agents.
      FABRIC_MAX_CONNECTIONS_PER_ADDRESS: "25000",
      FABRIC_MAX_HANDSHAKES_PER_ADDRESS: "20000",
    },
  },
});
try {
  console.log(
    `fan-out bench${quick ? " (quick)" : ""}: ${SIZES.map(count).join(", ")} agents, ${THREADS} agent threads, ${RAMP} connections opened at once per thread`,
  );
  await fabric
    .client(RegistryService, "registry")
    .createRole({ name: ROLE, description: "fan-out bench agents" });
  let registered = 0;
  for (const n of SIZES) {
    await run(fabric, n, registered);
    registered += n;
  }
} finally {
  await fabric.close();
}
console.log(`fan-out bench done in ${seconds(performance.now() - started)}`);
