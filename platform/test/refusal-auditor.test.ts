import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setImmediate as tick } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { CaService, GetTrustBundleResponseSchema } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyAuditChain, type AuditRow } from "../src/audit.js";
import type { Policy } from "../src/authorization.js";
import { createPool, type Pool } from "../src/database.js";
import { createLogger } from "../src/logger.js";
import { migrate } from "../src/migrations.js";
import { principalOf } from "../src/principal.js";
import { auditRefusals } from "../src/refusal-audit.js";
import {
  REFUSAL_WRITE_INTERVAL_MS,
  RefusalAuditor,
  refusalAuditorFor,
  type RefusalEvent,
} from "../src/refusal-auditor.js";
import { createRpcClient } from "../src/rpc-client.js";
import { createRpcServer, serve } from "../src/rpc-server.js";
import { FakeClock } from "../src/testing/clock.js";
import { createTestDatabase, type TestDatabase } from "../src/testing/database.js";
import { createTestPki, type TestPki } from "../src/testing/pki.js";
import { transaction } from "../src/transactions.js";
import { fixtureService } from "./fixtures/test-service.js";

const logger = createLogger({ service: "test", level: "silent" });
let db: TestDatabase;
let pki: TestPki;
let noMigrations: string;
const pools: Pool[] = [];

/** A pool on a schema holding only the platform's tables (the audit log). */
async function auditSchema(schema: string, max = 2): Promise<Pool> {
  await migrate({ url: db.url, schema, dir: noMigrations });
  const pool = createPool({ url: db.url, schema, max });
  pools.push(pool);
  return pool;
}

beforeAll(async () => {
  db = await createTestDatabase("refusals");
  pki = await createTestPki("fabric.test");
  noMigrations = mkdtempSync(join(tmpdir(), "fabric-no-migrations-"));
});

afterAll(async () => {
  for (const pool of pools) await pool.end();
  await db?.drop();
  rmSync(noMigrations, { recursive: true, force: true });
});

async function refusedEvents(pool: Pool, action: string) {
  const { rows } = await pool.query<Pick<AuditRow, "actor_id" | "details">>(
    "SELECT actor_id, details FROM audit_events WHERE action = $1 AND outcome = 'refused' ORDER BY seq",
    [action],
  );
  const single = rows.filter((r) => !r.details.aggregated);
  const aggregates = rows.filter((r) => r.details.aggregated);
  const counted = aggregates.reduce((n, r) => n + Number(r.details.count), 0);
  return { single, aggregates, total: single.length + counted };
}

describe("a flood of refused calls", () => {
  it(
    "leaves an authenticated caller's answers prompt and every refusal accounted for",
    { timeout: 120_000 },
    async () => {
      const pool = await auditSchema("flood");
      const fixture = fixtureService();
      // The admin's call writes to the service's pool, as a real mutation does.
      const registration = serve(
        CaService,
        {
          ...(fixture.implementation as Partial<ServiceImpl<typeof CaService>>),
          async getTrustBundle(_req, ctx) {
            const caller = principalOf(ctx.values)!;
            await transaction(pool, async (tx) =>
              tx.audit({
                actorId: caller.id,
                actorKind: caller.kind,
                action: "bundle.read",
                outcome: "success",
              }),
            );
            return create(GetTrustBundleResponseSchema, { trustDomain: caller.id });
          },
        },
        fixture.policy as Policy<typeof CaService>,
      );
      const server = await createRpcServer({
        name: "ca",
        trustDomain: "fabric.test",
        credentials: await pki.issue({ kind: "service", id: "ca" }),
        clientCertificates: "optional",
        grpcPort: 0,
        httpPort: 0,
        services: [registration],
        logger,
        onRefusal: auditRefusals(pool, logger),
      });
      try {
        const admin = createRpcClient(CaService, {
          url: server.grpcUrl,
          credentials: await pki.issue({ kind: "admin", id: "alice", grant: "platform-admin" }),
          retries: 0,
        });
        expect((await admin.getTrustBundle({})).trustDomain).toBe("alice");

        // Two anonymous connections, ten calls in flight on each, 1,000 refusals in all (the test process
        // is client and server at once: more in flight would measure its own event loop, not the pool).
        const CALLS = 1_000;
        const LANES = 10;
        const codes: (Code | "ok")[] = [];
        let flooding = true;
        const flood = Promise.all(
          Array.from({ length: 2 }, async () => {
            const anon = createRpcClient(CaService, {
              url: server.grpcUrl,
              credentials: { caBundlePem: pki.rootPem },
              retries: 0,
            });
            let next = 0;
            await Promise.all(
              Array.from({ length: LANES }, async () => {
                while (next++ < CALLS / 2) {
                  codes.push(
                    await anon.getTrustBundle({}).then(
                      () => "ok" as const,
                      (err: unknown) => ConnectError.from(err).code,
                    ),
                  );
                }
              }),
            );
          }),
        ).finally(() => (flooding = false));

        // The service pool serves the admin's calls only: refusals never take one of its connections.
        let serviceCheckouts = 0;
        pool.on("acquire", () => (serviceCheckouts += 1));
        const latencies: number[] = [];
        while (codes.length < 100) await tick();
        while (flooding) {
          const started = performance.now();
          await admin.getTrustBundle({});
          latencies.push(performance.now() - started);
        }
        await flood;

        expect(codes.filter((c) => c === Code.Unauthenticated)).toHaveLength(CALLS);
        expect(serviceCheckouts).toBe(latencies.length);
        // With refusals audited on the service pool, each took 4-5 seconds here.
        const sorted = [...latencies].sort((a, b) => a - b);
        expect(sorted[Math.floor(sorted.length / 2)]).toBeLessThan(1_000);
        expect(sorted.at(-1)).toBeLessThan(3_000);

        await refusalAuditorFor(pool, logger).flush();
        const refused = await refusedEvents(pool, "rpc.authorize");
        expect(refused.total).toBe(CALLS);
        const successes = await pool.query(
          "SELECT count(*)::int AS n FROM audit_events WHERE action = 'bundle.read'",
        );
        expect(successes.rows[0].n).toBe(latencies.length + 1);
        expect((await verifyAuditChain(pool)).ok).toBe(true);
      } finally {
        await server.close();
        await refusalAuditorFor(pool, logger).close();
      }
    },
  );
});

/** Lets the auditor's fake clock run (its pauses between writes and retries) until all is written. */
async function flushOn(clock: FakeClock, auditor: RefusalAuditor): Promise<void> {
  let done = false;
  const flushed = auditor.flush().then(() => (done = true));
  while (!done) {
    clock.advance(REFUSAL_WRITE_INTERVAL_MS);
    await tick();
  }
  await flushed;
}

const refusal = (ip: string, port: number, reason = "needs a client certificate"): RefusalEvent => ({
  actorId: "anonymous",
  actorKind: "anonymous",
  action: "rpc.authorize",
  targetType: "rpc",
  targetId: "fabric.ca.v1.CaService/GetTrustBundle",
  details: { code: "Unauthenticated", reason, address: `${ip}:${port}` },
});

describe("the refusal auditor", () => {
  it("folds identical refusals into counted events once flooded, within bounded tables", async () => {
    const pool = await auditSchema("folding");
    const clock = new FakeClock();
    const auditor = new RefusalAuditor({
      pool: createPool({ url: db.url, schema: "folding", max: 1 }),
      logger,
      clock,
      maxQueued: 10,
      maxAggregates: 3,
    });
    try {
      // 1,000 refusals: two addresses (many ports each) with one reason, and 40 distinct reasons.
      const started = clock.now();
      for (let i = 0; i < 960; i++) {
        auditor.record(refusal(i % 2 ? "192.0.2.1" : "192.0.2.2", 40_000 + i));
        if (i % 100 === 0) clock.advance(10);
      }
      for (let i = 0; i < 40; i++) auditor.record(refusal("198.51.100.7", 50_000, `reason ${i}`));
      await flushOn(clock, auditor);

      const { single, aggregates, total } = await refusedEvents(pool, "rpc.authorize");
      expect(total).toBe(1_000);
      expect(auditor.stats()).toEqual({
        recorded: 1_000,
        written: single.length,
        aggregated: 1_000 - single.length,
        pending: 0,
      });
      // the first refusal went straight to the writer, then the queue filled; the rest were folded
      expect(single).toHaveLength(11);
      const byAddress = aggregates.filter((r) => r.details.aggregated === "identical");
      expect(byAddress.map((r) => r.details.address).sort()).toEqual([
        "192.0.2.1",
        "192.0.2.2",
        "198.51.100.7",
      ]);
      expect(byAddress[0]!.details).toMatchObject({
        code: "Unauthenticated",
        reason: "needs a client certificate",
      });
      expect(new Date(byAddress[0]!.details.firstAt!).getTime()).toBeGreaterThanOrEqual(started);
      expect(byAddress[0]!.details.lastAt! > byAddress[0]!.details.firstAt!).toBe(true);
      const overflow = aggregates.filter((r) => r.details.aggregated === "overflow");
      expect(overflow).toHaveLength(1);
      expect(overflow[0]!.actor_id).toBe("various");
      expect((await verifyAuditChain(pool)).ok).toBe(true);
    } finally {
      await auditor.close();
    }
  });

  it("keeps counting while the database refuses its writes, and writes them all once it is back", async () => {
    const clock = new FakeClock();
    let outage!: Pool;
    // No audit tables in this schema yet: every write fails.
    const auditor = new RefusalAuditor({
      pool: createPool({ url: db.url, schema: "outage", max: 1 }),
      logger,
      clock,
    });
    try {
      for (let i = 0; i < 50; i++) auditor.record(refusal("192.0.2.9", 1_000 + i));
      // The write failed and the writer waits to retry on the clock.
      while (clock.pending === 0) await tick();
      for (let i = 0; i < 20; i++) auditor.record(refusal("192.0.2.9", 2_000 + i));
      expect(auditor.stats()).toMatchObject({ recorded: 70, pending: 70 });

      await auditSchema("outage").then((pool) => (outage = pool));
      await flushOn(clock, auditor);
      expect((await refusedEvents(outage, "rpc.authorize")).total).toBe(70);
      expect(auditor.stats().pending).toBe(0);
    } finally {
      await auditor.close();
    }
  });

  it("lets a caller that waits find its refusal committed", async () => {
    const pool = await auditSchema("waiting");
    const auditor = new RefusalAuditor({
      pool: createPool({ url: db.url, schema: "waiting", max: 1 }),
      logger,
    });
    try {
      await auditor.recordAndWait(refusal("192.0.2.3", 443));
      expect((await refusedEvents(pool, "rpc.authorize")).single).toHaveLength(1);
    } finally {
      await auditor.close();
    }
  });
});
