// Issuance throughput: certificates per second through the CA's Sign over mTLS (each stored and audited),
// against raw node:crypto ECDSA P-256 signatures per second measured in the same run on this machine.
//
//   npm run bench:issuance -w @fabric/bench                (~45 s)
//   BENCH_QUICK=1 npm run bench:issuance -w @fabric/bench  (~10 s smoke for CI)
//
// Knobs: BENCH_CLIENT_THREADS (load-generating threads, default half the cores, at least 1),
// BENCH_CONNECTIONS (HTTP/2 connections per thread, default 4), BENCH_INFLIGHT (calls in flight per
// connection, default 32), BENCH_SECONDS (measured seconds; default 20, quick 4).
import { createPrivateKey, generateKeyPairSync, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { performance } from "node:perf_hooks";
import { Worker } from "node:worker_threads";
import { create, toBinary } from "@bufbuild/protobuf";
import { SignRequestSchema } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { buildCsr, createPool, generateP256KeyPair, verifyAuditChain } from "@fabric/platform";
import { startFabric } from "../../test/harness/fabric.js";
import type { ClientWorkerData, ClientWorkerReport } from "./client-worker.js";

const quick = process.env.BENCH_QUICK === "1";
const threads = Number(
  process.env.BENCH_CLIENT_THREADS ?? Math.max(1, Math.floor(availableParallelism() / 2)),
);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 4);
const inflight = Number(process.env.BENCH_INFLIGHT ?? 32);
const seconds = Number(process.env.BENCH_SECONDS ?? (quick ? 4 : 20));
const warmupSeconds = quick ? 1 : 3;
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
 * CPU seconds (user + system, all threads) a process has used, from /proc (Linux; undefined elsewhere).
 * Unlike throughput, this stays meaningful when the machine is shared with other work.
 */
function cpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    // fields[11] and [12] are utime and stime (stat fields 14 and 15), in clock ticks of 1/100 s.
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
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
    await sleep(warmupSeconds * 1000);
    for (const w of workers) w.postMessage("measure");
    const t0 = performance.now();
    const caCpu0 = cpuSeconds(fabric.pid("ca"));
    await sleep(seconds * 1000);
    const caCpu = cpuSeconds(fabric.pid("ca"));
    const elapsed = (performance.now() - t0) / 1000;
    const reports = await Promise.all(
      workers.map(
        (w) =>
          new Promise<ClientWorkerReport>((resolve) => {
            w.once("message", (r: ClientWorkerReport) => resolve(r));
            w.postMessage("stop");
          }),
      ),
    );
    await Promise.all(workers.map((w) => w.terminate()));

    const pool = createPool({ url: fabric.databaseUrl, schema: "ca" });
    const stored = await pool.query<{ certs: string; audited: string }>(
      `SELECT (SELECT count(*) FROM certificates WHERE cluster_id = 'bench')::text AS certs,
              (SELECT count(*) FROM audit_events WHERE action = 'certificate.issue' AND cluster_id = 'bench')::text AS audited`,
    );
    const chain = await verifyAuditChain(pool);
    await pool.end();

    const raw = (rawBefore + rawSignsPerSecond(quick ? 1_000 : 3_000)) / 2;
    const issued = reports.reduce((n, r) => n + r.issued, 0);
    const failed = reports.reduce((n, r) => n + r.failed, 0);
    const firstError = reports.find((r) => r.firstError)?.firstError;
    const latencies = reports.flatMap((r) => r.latenciesMs).sort((a, b) => a - b);
    const pct = (p: number) =>
      latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0;
    const rate = issued / elapsed;
    console.log(`raw crypto.sign (P-256, one core, this run): ${raw.toFixed(0)} signatures/s`);
    console.log(
      `Sign over mTLS, stored and audited:        ${rate.toFixed(0)} certificates/s (${issued} in ${elapsed.toFixed(1)} s, ${failed} failed${firstError ? `: ${firstError}` : ""})`,
    );
    console.log(`latency: p50 ${pct(0.5).toFixed(1)} ms, p99 ${pct(0.99).toFixed(1)} ms`);
    if (caCpu !== undefined && caCpu0 !== undefined && issued > 0) {
      const perCert = ((caCpu - caCpu0) * 1e6) / issued;
      console.log(
        `CA process CPU: ${perCert.toFixed(0)} µs per certificate (all threads) → ${(1e6 / perCert).toFixed(0)} certificates per CA CPU-second`,
      );
    }
    console.log(
      `stored: ${stored.rows[0]!.certs} certificates, ${stored.rows[0]!.audited} issuance audit events; audit chain ${chain.ok ? "intact" : `BROKEN at ${chain.brokenSeq}`} (${chain.checked} events)`,
    );
    console.log(`ratio: ${((rate / raw) * 100).toFixed(1)}% of raw crypto.sign (target ≥ 20%)`);
  } finally {
    await fabric.close();
  }
}

await main();
