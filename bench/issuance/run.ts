// Issuance throughput: certificates per second through the CA's Sign over mTLS (each stored and audited),
// against raw node:crypto ECDSA P-256 signatures per second measured in the same run on this machine.
// Also measured in the same run, on the same connections: GetTrustBundle calls per second, an RPC with
// no work behind it, i.e. the ceiling the RPC layer alone puts on Sign; and the CPU each certificate
// cost the CA (all threads, and its main thread), the bench client and Postgres, which stays meaningful
// when client, CA and Postgres share a small machine.
//
//   npm run bench:issuance -w @fabric/bench                (~50 s)
//   BENCH_QUICK=1 npm run bench:issuance -w @fabric/bench  (~15 s smoke for CI)
//
// Knobs: BENCH_CLIENT_THREADS (load-generating threads, default half the cores, at least 1),
// BENCH_CONNECTIONS (HTTP/2 connections per thread, default 4), BENCH_INFLIGHT (calls in flight per
// connection, default 32), BENCH_SECONDS (measured seconds of Sign; default 20, quick 4).
import { createPrivateKey, generateKeyPairSync, sign } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { availableParallelism } from "node:os";
import { performance } from "node:perf_hooks";
import { Worker } from "node:worker_threads";
import { create, toBinary } from "@bufbuild/protobuf";
import { SignRequestSchema } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { buildCsr, createPool, generateP256KeyPair, verifyAuditChain } from "@fabric/platform";
import { startFabric } from "../../test/harness/fabric.js";
import type { ClientWorkerCommand, ClientWorkerData, ClientWorkerReport, Phase } from "./client-worker.js";

const quick = process.env.BENCH_QUICK === "1";
const threads = Number(
  process.env.BENCH_CLIENT_THREADS ?? Math.max(1, Math.floor(availableParallelism() / 2)),
);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 4);
const inflight = Number(process.env.BENCH_INFLIGHT ?? 32);
const seconds = Number(process.env.BENCH_SECONDS ?? (quick ? 4 : 20));
const rpcSeconds = Math.max(2, Math.round(seconds / 4));
// The CA's JIT needs a few seconds of load before its figures settle.
const warmupSeconds = quick ? 2 : 3;
const distinctCsrs = quick ? 200 : 1_000;

/** Baseline: single-threaded crypto.sign("sha256", ~TBS-sized data, P-256 key) per second. */
function rawSignsPerSecond(durationMs: number): number {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const key = createPrivateKey(privateKey.export({ type: "pkcs8", format: "pem" }));
  const data = Buffer.alloc(600, 7);
  let n = 0;
  const start = performance.now();
  while (performance.now() - start < durationMs) {
    for (let i = 0; i < 100; i++) sign("sha256", data, key);
    n += 100;
  }
  return (n * 1000) / (performance.now() - start);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * CPU seconds (user + system) a process has used, all its threads or one (`thread`, a task id; the main
 * thread's is the pid), from /proc (Linux; undefined elsewhere).
 */
function cpuSeconds(pid: number | undefined, thread?: number): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const path = thread === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${thread}/stat`;
    const fields = readFileSync(path, "utf8").split(") ")[1]!.split(" ");
    // fields[11] and [12] are utime and stime (stat fields 14 and 15), in clock ticks of 1/100 s.
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

/** CPU seconds of every postgres process (backends, WAL writer, checkpointer...), from /proc. */
function postgresCpuSeconds(): number | undefined {
  let total = 0;
  try {
    for (const pid of readdirSync("/proc")) {
      if (!/^\d+$/.test(pid)) continue;
      try {
        if (readFileSync(`/proc/${pid}/comm`, "utf8").startsWith("postgres"))
          total += cpuSeconds(Number(pid)) ?? 0;
      } catch {
        // exited meanwhile
      }
    }
  } catch {
    return undefined;
  }
  return total;
}

/** Busy and total CPU seconds of the whole machine, all cores, from /proc/stat. */
function machineCpu(): { busy: number; total: number } | undefined {
  try {
    const ticks = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = ticks.reduce((a, b) => a + b, 0);
    return { busy: (total - ticks[3]! - ticks[4]!) / 100, total: total / 100 };
  } catch {
    return undefined;
  }
}

/** CPU used by each party from now until the returned function is called. */
function cpuMeter(caPid: number | undefined) {
  const ca0 = cpuSeconds(caPid);
  const caMain0 = cpuSeconds(caPid, caPid);
  const client0 = process.cpuUsage();
  const pg0 = postgresCpuSeconds();
  const machine0 = machineCpu();
  return () => {
    const diff = (a: number | undefined, b: number | undefined) =>
      a === undefined || b === undefined ? undefined : a - b;
    const client = process.cpuUsage(client0);
    const machine1 = machineCpu();
    return {
      ca: diff(cpuSeconds(caPid), ca0),
      caMain: diff(cpuSeconds(caPid, caPid), caMain0),
      client: (client.user + client.system) / 1e6,
      postgres: diff(postgresCpuSeconds(), pg0),
      machineBusy:
        machine0 && machine1
          ? (machine1.busy - machine0.busy) / (machine1.total - machine0.total)
          : undefined,
    };
  };
}

async function main() {
  console.log(
    `issuance bench${quick ? " (quick)" : ""}: ${threads} client thread(s) × ${connections} connections × ${inflight} in flight, ${seconds} s measured, ${availableParallelism()} cores`,
  );
  const rawBefore = rawSignsPerSecond(quick ? 1_000 : 3_000);

  const fabric = await startFabric({ services: ["ca"], env: { ca: { FABRIC_LOG_LEVEL: "error" } } });
  try {
    // Distinct keys and CSRs made up front: the bench measures the CA, not the clients' key generation.
    const requests: Uint8Array[] = [];
    for (let i = 0; i < distinctCsrs; i++) {
      const key = generateP256KeyPair();
      const request = create(SignRequestSchema, {
        csrPem: await buildCsr(key.privateKeyPem, `bench-${i}`),
        principalKind: PrincipalKind.NODE,
        principalId: `bench-${i}`,
        clusterId: "bench",
        grants: ["entry-node"],
        authorizationRef: `bench/${i}`,
      });
      requests.push(toBinary(SignRequestSchema, request));
    }
    const workerData: ClientWorkerData = {
      url: fabric.urls.ca!.grpc,
      serverId: `spiffe://${fabric.trustDomain}/service/ca`,
      credentials: fabric.serviceIdentity("enrollment"),
      requests,
      connections,
      inflight,
    };
    const workers = await Promise.all(
      Array.from({ length: threads }, async () => {
        const worker = new Worker(new URL("./client-worker.mjs", import.meta.url), { workerData });
        await new Promise<void>((resolve, reject) => {
          worker.once("message", () => resolve());
          worker.once("error", reject);
        });
        return worker;
      }),
    );
    const tell = (command: ClientWorkerCommand) => {
      for (const w of workers) w.postMessage(command);
    };
    /** Runs one phase on every client thread: warm-up, then `measureSeconds` counted. */
    const measure = async (phase: Phase, measureSeconds: number) => {
      tell({ run: phase });
      await sleep(warmupSeconds * 1000);
      tell("measure");
      const t0 = performance.now();
      const meter = cpuMeter(fabric.pid("ca"));
      await sleep(measureSeconds * 1000);
      const cpu = meter();
      const elapsed = (performance.now() - t0) / 1000;
      const reports = await Promise.all(
        workers.map(
          (w) =>
            new Promise<ClientWorkerReport>((resolve) => {
              w.once("message", (r: ClientWorkerReport) => resolve(r));
              w.postMessage("stop" satisfies ClientWorkerCommand);
            }),
        ),
      );
      const done = reports.reduce((n, r) => n + r.done, 0);
      const latencies = reports.flatMap((r) => r.latenciesMs).sort((a, b) => a - b);
      return {
        done,
        rate: done / elapsed,
        elapsed,
        failed: reports.reduce((n, r) => n + r.failed, 0),
        firstError: reports.find((r) => r.firstError)?.firstError,
        pct: (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0,
        cpu,
      };
    };
    const signs = await measure("sign", seconds);
    const rpc = await measure("rpc", rpcSeconds);
    await Promise.all(workers.map((w) => w.terminate()));

    const pool = createPool({ url: fabric.databaseUrl, schema: "ca" });
    const stored = await pool.query<{ certs: string; audited: string }>(
      `SELECT (SELECT count(*) FROM certificates WHERE cluster_id = 'bench')::text AS certs,
              (SELECT count(*) FROM audit_events WHERE action = 'certificate.issue' AND cluster_id = 'bench')::text AS audited`,
    );
    const chain = await verifyAuditChain(pool);
    await pool.end();

    const raw = (rawBefore + rawSignsPerSecond(quick ? 1_000 : 3_000)) / 2;
    const { cpu } = signs;
    const perCert = (s: number | undefined) =>
      s === undefined || signs.done === 0 ? "?" : `${((s * 1e6) / signs.done).toFixed(0)} µs`;
    console.log(`raw crypto.sign (P-256, one core, this run): ${raw.toFixed(0)} signatures/s`);
    console.log(
      `Sign over mTLS, stored and audited:        ${signs.rate.toFixed(0)} certificates/s (${signs.done} in ${signs.elapsed.toFixed(1)} s, ${signs.failed} failed${signs.firstError ? `: ${signs.firstError}` : ""})`,
    );
    console.log(`latency: p50 ${signs.pct(0.5).toFixed(1)} ms, p99 ${signs.pct(0.99).toFixed(1)} ms`);
    console.log(
      `RPC layer alone (GetTrustBundle, same connections): ${rpc.rate.toFixed(0)} calls/s (${rpc.failed} failed${rpc.firstError ? `: ${rpc.firstError}` : ""}); Sign runs at ${((signs.rate / rpc.rate) * 100).toFixed(0)}% of it`,
    );
    console.log(
      `CPU per certificate: CA ${perCert(cpu.ca)} (main thread ${perCert(cpu.caMain)}), bench client ${perCert(cpu.client)}, Postgres ${perCert(cpu.postgres)}; machine ${cpu.machineBusy === undefined ? "?" : (cpu.machineBusy * 100).toFixed(0)}% busy while measuring`,
    );
    console.log(
      `stored: ${stored.rows[0]!.certs} certificates, ${stored.rows[0]!.audited} issuance audit events; audit chain ${chain.ok ? "intact" : `BROKEN at ${chain.brokenSeq}`} (${chain.checked} events)`,
    );
    console.log(`ratio: ${((signs.rate / raw) * 100).toFixed(1)}% of raw crypto.sign (target ≥ 20%)`);
  } finally {
    await fabric.close();
  }
}

await main();
