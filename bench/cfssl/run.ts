// Issuance against cfssl: certificates per second through Fabric's CA Sign over mTLS (each stored and
// audited in Postgres) and through cfssl's `serve` sign API (HTTP, nothing stored), driven from one
// closed loop with the same concurrency, in the same run, both signing with the same P-256 intermediate;
// raw node:crypto signatures per second as the floor. Each gets a lean client of its protocol (pre-encoded
// gRPC frames over node:http2, JSON over node:http keep-alive), so neither pays for a heavy client on the
// shared cores. Goal: Fabric ≥ 2× cfssl. cfssl comes from the Debian package golang-cfssl; where it is
// not installed this bench says so and skips (it never downloads).
//
//   npm run bench:cfssl -w @fabric/bench        BENCH_QUICK=1 for the CI smoke
//   knobs: BENCH_CONNECTIONS (default 4), BENCH_INFLIGHT (per connection, default 32), BENCH_SECONDS
import { spawn, spawnSync } from "node:child_process";
import { generateKeyPairSync, sign } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { create, toBinary } from "@bufbuild/protobuf";
import { SignRequestSchema } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { buildCsr, generateP256KeyPair } from "@fabric/platform";
import { freePort } from "@fabric/platform/testing";
import { openCa } from "../../services/ca/src/ca-directory.js";
import type { Fabric } from "../../test/harness/fabric.js";
import { connectGrpc, grpcFrame, requestSign } from "../issuance/sign-client.js";
import { closedLoop } from "../lib/closed-loop.js";
import { runStandalone } from "../lib/fabric.js";
import { count, line, ms, quick, summarize } from "../lib/stats.js";

const connections = Number(process.env.BENCH_CONNECTIONS ?? 4);
const inflight = Number(process.env.BENCH_INFLIGHT ?? 32);
const seconds = Number(process.env.BENCH_SECONDS ?? (quick ? 3 : 15));
// The CA's JIT needs a few seconds of load before its figures settle.
const warmupSeconds = quick ? 2 : 3;

function cfsslInstalled(): boolean {
  return spawnSync("cfssl", ["version"], { stdio: "ignore" }).status === 0;
}

/** Single-threaded P-256 signatures per second over a TBS-sized buffer: what signing alone costs. */
function rawSignsPerSecond(durationMs: number): number {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const data = Buffer.alloc(600, 7);
  let n = 0;
  const start = performance.now();
  while (performance.now() - start < durationMs) {
    for (let i = 0; i < 100; i++) sign("sha256", data, privateKey);
    n += 100;
  }
  return (n * 1_000) / (performance.now() - start);
}

/** `cfssl serve` with the fabric's own intermediate, on a free port; resolves once it answers. */
async function startCfssl(fabric: Fabric, dir: string) {
  const ca = await openCa(fabric.dir, fabric.passphrase);
  writeFileSync(join(dir, "ca.pem"), ca.intermediatePem);
  writeFileSync(join(dir, "ca-key.pem"), ca.intermediateKey.export({ type: "pkcs8", format: "pem" }));
  writeFileSync(
    join(dir, "config.json"),
    JSON.stringify({
      signing: { default: { expiry: "720h", usages: ["digital signature", "client auth"] } },
    }),
  );
  const port = await freePort();
  const child = spawn(
    "cfssl",
    [
      "serve",
      "-address",
      "127.0.0.1",
      "-port",
      String(port),
      "-ca",
      join(dir, "ca.pem"),
      "-ca-key",
      join(dir, "ca-key.pem"),
      "-config",
      join(dir, "config.json"),
      "-loglevel",
      "5",
    ],
    { stdio: "ignore" },
  );
  const agent = new Agent({ keepAlive: true, maxSockets: connections * inflight });
  const signOne = (csrPem: string) =>
    new Promise<void>((resolve, reject) => {
      const body = JSON.stringify({ certificate_request: csrPem });
      const req = request(
        {
          host: "127.0.0.1",
          port,
          path: "/api/v1/cfssl/sign",
          method: "POST",
          agent,
          headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
        },
        (res) => {
          let text = "";
          res.on("data", (d: Buffer) => (text += d.toString()));
          res.on("end", () => {
            const parsed = JSON.parse(text || "{}") as {
              success?: boolean;
              result?: { certificate?: string };
              errors?: unknown;
            };
            if (res.statusCode === 200 && parsed.success && parsed.result?.certificate) resolve();
            else reject(new Error(`cfssl answered ${res.statusCode}: ${text.slice(0, 200)}`));
          });
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  return { child, agent, signOne };
}

export async function issuanceVsCfssl(fabric: Fabric): Promise<void> {
  const workers = connections * inflight;
  console.log(
    `issuance vs cfssl${quick ? " (quick)" : ""}: ${workers} calls in flight for each, ${seconds} s measured each`,
  );
  if (!cfsslInstalled()) {
    console.log(
      "issuance vs cfssl: skipped — cfssl is not installed here (Debian: apt-get install -y golang-cfssl)",
    );
    return;
  }
  const distinct = quick ? 200 : 1_000;
  const keys = Array.from({ length: distinct }, () => generateP256KeyPair());
  const csrs = await Promise.all(keys.map((k, i) => buildCsr(k.privateKeyPem, `bench-${i}`)));
  const requests = csrs.map((csrPem, i) =>
    grpcFrame(
      toBinary(
        SignRequestSchema,
        create(SignRequestSchema, {
          csrPem,
          principalKind: PrincipalKind.NODE,
          principalId: `cfssl-bench-${i}`,
          clusterId: "bench",
          grants: ["relay-node"],
          authorizationRef: `bench/cfssl/${i}`,
        }),
      ),
    ),
  );
  const clients = await Promise.all(
    Array.from({ length: connections }, () =>
      connectGrpc(
        fabric.urls.ca!.grpc,
        fabric.serviceIdentity("enrollment"),
        `spiffe://${fabric.trustDomain}/service/ca`,
      ),
    ),
  );
  const dir = mkdtempSync(join(tmpdir(), "bench-cfssl-"));
  const cfssl = await startCfssl(fabric, dir);
  try {
    // cfssl has no readiness endpoint: wait for its first successful signature.
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        await cfssl.signOne(csrs[0]!);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`cfssl serve did not answer: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const raw = rawSignsPerSecond(quick ? 1_000 : 3_000);
    const fabricRun = await closedLoop({
      workers,
      warmupSeconds,
      seconds,
      call: (w, i) => requestSign(clients[w % connections]!, requests[i % distinct]!),
    });
    const cfsslRun = await closedLoop({
      workers,
      warmupSeconds,
      seconds,
      call: (_w, i) => cfssl.signOne(csrs[i % distinct]!),
    });
    const fabricRate = fabricRun.done / fabricRun.seconds;
    const cfsslRate = cfsslRun.done / cfsslRun.seconds;
    const f = summarize(fabricRun.latencies);
    const c = summarize(cfsslRun.latencies);
    console.log(`raw crypto.sign (P-256, one core, this run): ${count(raw)} signatures/s`);
    console.log(
      `Fabric CA Sign over mTLS, stored and audited: ${count(fabricRate)} certificates/s, p50 ${ms(f.p50)}, p99 ${ms(f.p99)} (${fabricRun.failed} failed${fabricRun.firstError ? `: ${fabricRun.firstError}` : ""})`,
    );
    console.log(
      `cfssl serve /api/v1/cfssl/sign over HTTP, not stored: ${count(cfsslRate)} certificates/s, p50 ${ms(c.p50)}, p99 ${ms(c.p99)} (${cfsslRun.failed} failed${cfsslRun.firstError ? `: ${cfsslRun.firstError}` : ""})`,
    );
    console.log(
      line(
        "issuance",
        `${count(fabricRate)} certificates/s`,
        "≥ 2× cfssl",
        "cfssl serve sign",
        fabricRate / cfsslRate,
      ),
    );
    console.log(
      line(
        "issuance",
        `${count(fabricRate)} certificates/s`,
        undefined,
        "raw crypto.sign on one core",
        fabricRate / raw,
      ),
    );
  } finally {
    for (const c of clients) c.close();
    cfssl.child.kill("SIGKILL");
    cfssl.agent.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

await runStandalone(import.meta.url, issuanceVsCfssl);
