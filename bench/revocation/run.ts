// Revocation, two figures:
// 1. Propagation: from the start of a Revoke to the revoked node being refused everywhere — its open
//    registry Session and router Watch cut, and fresh calls refused by the CA, enrollment and the router
//    (the four services as processes). Goal p99 ≤ 1 s. Baseline measured in the same run:
//    the Revoke call's own round trip (the change cannot be anywhere before it is committed).
// 2. CRL rebuild with 100,000 revoked entries, by the CA's own CRL publisher on a database seeded with
//    them. Goal ≤ 250 ms. Baseline measured in the same run: reading the same rows with the same query
//    (crlEntries) plus one ECDSA signature over as many bytes as the CRL (the floor of any rebuild from
//    Postgres): the ratio is what encoding costs on top.
//
//   npm run bench:revocation -w @fabric/bench     BENCH_QUICK=1 for the CI smoke
//   knobs: BENCH_REVOCATIONS (default 50), BENCH_CRL_ENTRIES (default 100000)
import { execFileSync } from "node:child_process";
import { generateKeyPairSync, sign } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { caDefinition, initCa } from "@fabric/ca";
import {
  createLogger,
  createPool,
  createRpcClient,
  inspectCertificate,
  migrate,
  type TlsCredentials,
} from "@fabric/platform";
import { createTestDatabase } from "@fabric/platform/testing";
import { CaService, RevocationReason } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegistryService, type SessionRequest } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { RouterService } from "@fabric/proto/fabric/router/v1/router_pb.js";
import { openCa } from "../../services/ca/src/ca-directory.js";
import { CrlPublisher, crlEntries } from "../../services/ca/src/crl.js";
import { SigningAuthority } from "../../services/ca/src/signing-authority.js";
import type { Fabric } from "../../test/harness/fabric.js";
import { runStandalone } from "../lib/fabric.js";
import { Pushable } from "../lib/pushable.js";
import { line, ms, quick, summarize, count } from "../lib/stats.js";

const REVOCATIONS = Number(process.env.BENCH_REVOCATIONS ?? (quick ? 5 : 50));
const CRL_ENTRIES = Number(process.env.BENCH_CRL_ENTRIES ?? (quick ? 10_000 : 100_000));
const CRL_BUILDS = 3;
const POLL_MS = 2;

// The registry admits one Session per node (a new one replaces the old), so its open Session being cut
// is where the registry shows the revocation; the other services also get fresh calls.
const WHERE = [
  "registry Session cut",
  "router Watch cut",
  "ca refuses",
  "enrollment refuses",
  "router refuses",
] as const;
type Where = (typeof WHERE)[number];

function clientOf<S extends Parameters<typeof createRpcClient>[0]>(
  fabric: Fabric,
  service: S,
  target: "ca" | "enrollment" | "registry" | "router",
  creds: TlsCredentials,
) {
  return createRpcClient(service, {
    url: fabric.urls[target]!.grpc,
    credentials: creds,
    expectServerId: `spiffe://${fabric.trustDomain}/service/${target}`,
    retries: 0,
  });
}

const refusedCode = (err: unknown) => ConnectError.from(err).code === Code.Unauthenticated;

/** Polls `attempt` until it is refused as Unauthenticated; resolves with that moment (performance.now()). */
async function untilRefused(attempt: () => Promise<unknown>): Promise<number> {
  for (;;) {
    try {
      await attempt();
    } catch (err) {
      if (refusedCode(err)) return performance.now();
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** First message of a stream, and a promise of the moment it ends with Unauthenticated. */
async function openStream<T>(stream: AsyncIterable<T>): Promise<{ cut: Promise<number> }> {
  const it = stream[Symbol.asyncIterator]();
  await it.next();
  const cut = (async () => {
    try {
      while (!(await it.next()).done);
    } catch (err) {
      if (refusedCode(err)) return performance.now();
      throw err;
    }
    throw new Error("the stream ended without being cut");
  })();
  return { cut };
}

async function propagation(fabric: Fabric) {
  const cluster = `rev-${Date.now().toString(36)}`;
  const registry = fabric.client(RegistryService, "registry");
  await registry.createCluster({ clusterId: cluster, name: "Revocation bench" });
  const asEnrollment = fabric.client(RegistryService, "registry", fabric.serviceIdentity("enrollment"));
  const ca = fabric.client(CaService, "ca");
  const by: Record<Where, number[]> = Object.fromEntries(WHERE.map((w) => [w, []])) as unknown as Record<
    Where,
    number[]
  >;
  const everywhere: number[] = [];
  const revokeRtt: number[] = [];
  for (let i = 0; i < REVOCATIONS; i++) {
    const nodeId = `${cluster}-n-${i}`;
    await asEnrollment.registerNode({ nodeId, clusterId: cluster, joinRequestId: `jr-${nodeId}` });
    const creds = await fabric.issue({ kind: "node", id: nodeId, cluster });
    const reg = clientOf(fabric, RegistryService, "registry", creds) as Client<typeof RegistryService>;
    const router = clientOf(fabric, RouterService, "router", creds) as Client<typeof RouterService>;
    const caAsNode = clientOf(fabric, CaService, "ca", creds) as Client<typeof CaService>;
    const enrollAsNode = clientOf(fabric, EnrollmentService, "enrollment", creds) as Client<
      typeof EnrollmentService
    >;
    // Open streams, each proven live by a first answer.
    const requests = new Pushable<Partial<SessionRequest>>();
    requests.push({ seq: 1n, payload: { case: "heartbeat", value: {} } } as Partial<SessionRequest>);
    const session = await openStream(reg.session(requests as AsyncIterable<never>, { timeoutMs: 0 }));
    const watch = await openStream(router.watch({}, { timeoutMs: 0 }));
    // Connections of the fresh calls are warm before the clock starts.
    await caAsNode.getTrustBundle({});

    const t0 = performance.now();
    const revoke = ca
      .revoke({
        target: { case: "serial", value: inspectCertificate(creds.certificatePem).serialHex },
        reason: RevocationReason.KEY_COMPROMISE,
      })
      .then(() => performance.now() - t0);
    const moments = await Promise.all([
      session.cut,
      watch.cut,
      untilRefused(() => caAsNode.getTrustBundle({})),
      untilRefused(() => enrollAsNode.renew({ csrPem: "" })),
      untilRefused(async () => {
        for await (const _ of router.watch({}, { timeoutMs: 1_000 })) break;
      }),
    ]);
    revokeRtt.push(await revoke);
    WHERE.forEach((w, k) => by[w].push(moments[k]! - t0));
    everywhere.push(Math.max(...moments) - t0);
    requests.end();
  }
  return { by, everywhere: summarize(everywhere), revoke: summarize(revokeRtt) };
}

async function crlRebuild() {
  const db = await createTestDatabase("crlbench");
  const dir = mkdtempSync(join(tmpdir(), "bench-crl-"));
  const pool = createPool({ url: db.url, schema: "ca", max: 4 });
  try {
    await migrate({ url: db.url, schema: "ca", dir: caDefinition.migrationsDir });
    // Serials as the CA keeps them: 128-bit lowercase hex without leading zeros.
    await pool.query(
      `INSERT INTO certificates (serial, principal_kind, principal_id, spiffe_id, not_before, not_after,
         fingerprint_sha256, authorization_ref, issued_at, revoked_at, revocation_reason)
       SELECT '4' || substr(md5('serial' || g), 2), 'node', 'n-' || g, 'spiffe://bench/cluster/c/node/n-' || g,
         now() - interval '1 day', now() + interval '30 days', md5('fp' || g) || md5('fp2' || g), 'bench',
         now() - interval '1 day', now() - (g || ' seconds')::interval, (ARRAY[0, 1, 4, 5])[1 + g % 4]
       FROM generate_series(1, $1::int) AS g`,
      [CRL_ENTRIES],
    );
    await pool.query("ANALYZE certificates");
    await initCa({ dir, trustDomain: "bench.test", passphrase: "bench-passphrase-0123" });
    const ca = await openCa(dir, "bench-passphrase-0123");
    const authority = await SigningAuthority.create(ca.intermediatePem, ca.intermediateKey);
    const publisher = new CrlPublisher(pool, authority, {
      refreshMs: 3_600_000,
      debounceMs: 100,
      logger: createLogger({ service: "bench", level: "error" }),
    });
    const builds: number[] = [];
    for (let i = 0; i < CRL_BUILDS; i++) {
      const t0 = performance.now();
      await publisher.rebuild();
      builds.push(performance.now() - t0);
    }
    const der = served(publisher);
    const crlFile = join(dir, "crl.der");
    writeFileSync(crlFile, der);
    // openssl reads it back: a CRL, not just bytes.
    const number = execFileSync(
      "openssl",
      ["crl", "-inform", "DER", "-in", crlFile, "-noout", "-crlnumber"],
      { encoding: "utf8" },
    ).trim();

    // Baseline: the same rows through the same query, and one signature over as many bytes.
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const floors: number[] = [];
    for (let i = 0; i < CRL_BUILDS; i++) {
      const t0 = performance.now();
      const rows = await crlEntries(pool);
      sign("sha256", Buffer.alloc(der.length, rows.length % 256), privateKey);
      floors.push(performance.now() - t0);
    }
    return { builds: summarize(builds), floor: summarize(floors), bytes: der.length, number };
  } finally {
    await pool.end();
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The DER the publisher serves at /crl. */
function served(publisher: CrlPublisher): Buffer {
  let body: Buffer | undefined;
  const res = {
    writeHead: () => res,
    end: (chunk?: Buffer) => void (body = chunk),
  };
  publisher.route({ method: "GET" } as never, res as never);
  if (!body) throw new Error("the CRL publisher has no CRL to serve");
  return body;
}

export async function revocation(fabric: Fabric): Promise<void> {
  console.log(
    `revocation${quick ? " (quick)" : ""}: ${REVOCATIONS} revocations; CRL with ${count(CRL_ENTRIES)} entries, ${CRL_BUILDS} rebuilds`,
  );
  const p = await propagation(fabric);
  for (const w of WHERE) {
    const s = summarize(p.by[w]);
    console.log(`  ${w}: p50 ${ms(s.p50)}, p99 ${ms(s.p99)}`);
  }
  console.log(`Revoke round trip: p50 ${ms(p.revoke.p50)}, p99 ${ms(p.revoke.p99)}`);
  console.log(
    line(
      "revocation, refused everywhere",
      `p99 ${ms(p.everywhere.p99)}`,
      "≤ 1 s",
      "the Revoke round trip p99",
      p.everywhere.p99 / p.revoke.p99,
    ),
  );

  const crl = await crlRebuild();
  console.log(
    `CRL: ${count(crl.bytes)} bytes, ${crl.number}, rebuild p50 ${ms(crl.builds.p50)}, max ${ms(crl.builds.max)}; floor (same query + one signature) p50 ${ms(crl.floor.p50)}`,
  );
  console.log(
    line(
      `CRL rebuild with ${count(CRL_ENTRIES)} entries`,
      `p50 ${ms(crl.builds.p50)}`,
      CRL_ENTRIES === 100_000 ? "≤ 250 ms" : "≤ 250 ms at 100,000 entries",
      "reading the rows and one signature",
      crl.builds.p50 / crl.floor.p50,
    ),
  );
}

await runStandalone(import.meta.url, revocation);
