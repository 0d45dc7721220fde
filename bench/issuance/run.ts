// Issuance throughput: certificates per second through the CA's Sign over mTLS (each stored and audited),
// against raw node:crypto ECDSA P-256 signatures per second measured in the same run on this machine.
//
//   npm run bench:issuance -w @fabric/bench            (~40 s)
//   BENCH_QUICK=1 npm run bench:issuance -w @fabric/bench   (~10 s smoke for CI)
//
// Knobs: BENCH_CONNECTIONS (HTTP/2 connections, default 4), BENCH_INFLIGHT (calls in flight per
// connection, default 32), BENCH_SECONDS (measured seconds; default 20, quick 4).
import { createPrivateKey, generateKeyPairSync, sign } from "node:crypto";
import { performance } from "node:perf_hooks";
import { create } from "@bufbuild/protobuf";
import { CaService, SignRequestSchema, type SignRequest } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import {
  buildCsr,
  createPool,
  createRpcClient,
  generateP256KeyPair,
  verifyAuditChain,
} from "@fabric/platform";
import { startFabric } from "../../test/harness/fabric.js";

const quick = process.env.BENCH_QUICK === "1";
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

async function main() {
  console.log(
    `issuance bench${quick ? " (quick)" : ""}: ${connections} connections × ${inflight} in flight, ${seconds} s measured`,
  );
  const rawBefore = rawSignsPerSecond(quick ? 1_000 : 3_000);

  const fabric = await startFabric({
    services: ["ca"],
    env: { ca: { FABRIC_LOG_LEVEL: "error", FABRIC_DB_POOL_SIZE: "4" } },
  });
  try {
    const enrollment = fabric.serviceIdentity("enrollment");
    // Distinct keys and CSRs made up front: the bench measures the CA, not the clients' key generation.
    const requests: SignRequest[] = [];
    for (let i = 0; i < distinctCsrs; i++) {
      const key = generateP256KeyPair();
      requests.push(
        create(SignRequestSchema, {
          csrPem: await buildCsr(key.privateKeyPem, `bench-${i}`),
          principalKind: PrincipalKind.NODE,
          principalId: `bench-${i}`,
          clusterId: "bench",
          grants: ["entry-node"],
          authorizationRef: `bench/${i}`,
        }),
      );
    }
    const clients = Array.from({ length: connections }, () =>
      createRpcClient(CaService, {
        url: fabric.urls.ca!.grpc,
        credentials: enrollment,
        expectServerId: `spiffe://${fabric.trustDomain}/service/ca`,
        timeoutMs: 60_000,
      }),
    );

    let measuring = false;
    let stopping = false;
    let issued = 0;
    let failed = 0;
    const latencies: number[] = [];
    let next = 0;
    const worker = async (client: (typeof clients)[number]) => {
      while (!stopping) {
        const request = requests[next++ % requests.length]!;
        const t0 = performance.now();
        try {
          await client.sign(request);
          if (measuring) {
            issued++;
            latencies.push(performance.now() - t0);
          }
        } catch (err) {
          failed++;
          if (failed === 1) console.error("Sign failed:", (err as Error).message);
        }
      }
    };
    const workers = clients.flatMap((c) => Array.from({ length: inflight }, () => worker(c)));
    await new Promise((r) => setTimeout(r, warmupSeconds * 1000));
    measuring = true;
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    measuring = false;
    const elapsed = (performance.now() - t0) / 1000;
    stopping = true;
    await Promise.all(workers);

    const pool = createPool({ url: fabric.databaseUrl, schema: "ca" });
    const stored = await pool.query<{ certs: string; audited: string }>(
      `SELECT (SELECT count(*) FROM certificates WHERE cluster_id = 'bench')::text AS certs,
              (SELECT count(*) FROM audit_events WHERE action = 'certificate.issue' AND cluster_id = 'bench')::text AS audited`,
    );
    const chain = await verifyAuditChain(pool);
    await pool.end();

    const rawAfter = rawSignsPerSecond(quick ? 1_000 : 3_000);
    const raw = (rawBefore + rawAfter) / 2;
    const rate = issued / elapsed;
    latencies.sort((a, b) => a - b);
    const pct = (p: number) =>
      latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0;
    console.log(`raw crypto.sign (P-256, one core, this run): ${raw.toFixed(0)} signatures/s`);
    console.log(
      `Sign over mTLS, stored and audited:        ${rate.toFixed(0)} certificates/s (${issued} in ${elapsed.toFixed(1)} s, ${failed} failed)`,
    );
    console.log(`latency: p50 ${pct(0.5).toFixed(1)} ms, p99 ${pct(0.99).toFixed(1)} ms`);
    console.log(
      `stored: ${stored.rows[0]!.certs} certificates, ${stored.rows[0]!.audited} issuance audit events; audit chain ${chain.ok ? "intact" : `BROKEN at ${chain.brokenSeq}`} (${chain.checked} events)`,
    );
    console.log(`ratio: ${((rate / raw) * 100).toFixed(1)}% of raw crypto.sign (target ≥ 20%)`);
  } finally {
    await fabric.close();
  }
}

await main();
