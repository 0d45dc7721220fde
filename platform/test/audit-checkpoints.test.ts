// Signed checkpoints of the audit chain against what a database superuser can do to it: rewrite a record
// and recompute every later hash (the chain alone still verifies), cut records off the end, delete or forge
// checkpoints. Real Postgres; the tampering runs as the superuser, the service as its own role.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { AuditCheckpoints } from "../src/audit-checkpoints.js";
import { verifyAudit } from "../src/audit.js";
import { createPool, type Pool } from "../src/database.js";
import { bootstrapServiceDatabase } from "../src/database-roles.js";
import { createLogger } from "../src/logger.js";
import { inspectCertificate } from "../src/pki/certificates.js";
import { RevocationSet } from "../src/revocation.js";
import { rewriteAuditRecord, tamperWithAudit, truncateAuditLog } from "../src/testing/audit-tampering.js";
import { createTestDatabase, type TestDatabase } from "../src/testing/database.js";
import { createTestPki, type TestPki } from "../src/testing/pki.js";
import type { TlsCredentials } from "../src/tls-credentials.js";
import { recordAudit } from "../src/transactions.js";

let db: TestDatabase;
let pki: TestPki;
let registry: TlsCredentials;
const empty = mkdtempSync(join(tmpdir(), "no-migrations-"));
const pools: Pool[] = [];
let schemas = 0;

beforeAll(async () => {
  db = await createTestDatabase("auditckpt");
  pki = await createTestPki("fabric.test");
  registry = await pki.issue({ kind: "service", id: "registry" });
});
afterAll(async () => {
  await Promise.all(pools.map((p) => p.end()));
  await db?.drop();
  rmSync(empty, { recursive: true, force: true });
});

/** A fresh audit log in a schema of its own: the service's pool (its role), and a superuser's tampering. */
async function freshLog() {
  const schema = `log${++schemas}`;
  await bootstrapServiceDatabase({
    adminUrl: db.url,
    serviceUrl: db.serviceUrl("registry"),
    schema,
    dir: empty,
  });
  const pool = createPool({ url: db.serviceUrl("registry"), schema, max: 2 });
  pools.push(pool);
  const append = async (n: number) => {
    for (let i = 0; i < n; i++) {
      await recordAudit(pool, {
        actorId: `admin-${i}`,
        actorKind: "admin",
        action: "thing.do",
        outcome: "success",
      });
    }
  };
  return {
    pool,
    append,
    rewrite: (seq: number) => rewriteAuditRecord(db.url, schema, BigInt(seq)),
    truncate: (seq: number) => truncateAuditLog(db.url, schema, BigInt(seq)),
    tamper: (sql: string) => tamperWithAudit(db.url, schema, sql),
  };
}

/** The service's checkpoints, as a process holding `identity` (a new object = a new process). */
function checkpointsOf(pool: Pool, identity = registry, revocations = new RevocationSet()): AuditCheckpoints {
  return new AuditCheckpoints(pool, {
    service: "registry",
    trustDomain: pki.trustDomain,
    identity: () => identity,
    revocations,
    logger: createLogger({ service: "registry", level: "silent" }),
  });
}

describe("signed checkpoints of the audit chain", () => {
  it("catch a record rewritten with every later hash recomputed, at that record", async () => {
    const log = await freshLog();
    await log.append(10);
    // The service stops: its shutdown checkpoint covers records 1-10.
    await checkpointsOf(log.pool).stop();
    await log.append(5);
    expect(await verifyAudit(log.pool, {}, checkpointsOf(log.pool).anchors())).toMatchObject({
      ok: true,
      rowsChecked: 15n,
    });

    await log.rewrite(4);
    // The chain alone is fooled...
    expect(await verifyAudit(log.pool, {})).toMatchObject({ ok: true, rowsChecked: 15n });
    // ...the checkpoints are not, even read by a new process that remembers nothing.
    const result = await verifyAudit(log.pool, {}, checkpointsOf(log.pool).anchors());
    expect(result).toMatchObject({ ok: false, firstBrokenSeq: 4n, rowsChecked: 3n, lastSeq: 3n });
    expect(result.problem).toMatch(
      /^rewritten: record 4 no longer has the hash the checkpoint of records 1-10/,
    );
    // A range that starts after the rewrite still meets the re-hashed records.
    expect(await verifyAudit(log.pool, { fromSeq: 8n }, checkpointsOf(log.pool).anchors())).toMatchObject({
      ok: false,
      firstBrokenSeq: 8n,
    });
    // Records past the last checkpoint are protected by the chain only: a rewrite there goes unseen.
    await log.rewrite(13);
    expect(await verifyAudit(log.pool, { fromSeq: 11n }, checkpointsOf(log.pool).anchors())).toMatchObject({
      ok: true,
    });
  });

  it("catch records cut off the end, from the first one gone", async () => {
    const log = await freshLog();
    await log.append(8);
    await checkpointsOf(log.pool).checkpoint();
    await log.truncate(5);
    expect(await verifyAudit(log.pool, {})).toMatchObject({ ok: true, rowsChecked: 5n });
    const result = await verifyAudit(log.pool, {}, checkpointsOf(log.pool).anchors());
    expect(result).toMatchObject({ ok: false, firstBrokenSeq: 6n, rowsChecked: 5n, lastSeq: 5n });
    expect(result.problem).toMatch(
      /^truncated: .* covers records up to 8, but the log ends at 5: records 6-8 were removed$/,
    );

    await log.truncate(0);
    expect(await verifyAudit(log.pool, {}, checkpointsOf(log.pool).anchors())).toMatchObject({
      ok: false,
      firstBrokenSeq: 1n,
      rowsChecked: 0n,
      problem: expect.stringMatching(/records 1-8 were removed/),
    });
  });

  it("are remembered by the process that signed them when a superuser deletes them too", async () => {
    const log = await freshLog();
    await log.append(6);
    const running = checkpointsOf(log.pool);
    await running.checkpoint();
    await log.tamper("DELETE FROM audit_checkpoints");
    expect(await verifyAudit(log.pool, {}, running.anchors())).toMatchObject({
      ok: false,
      firstBrokenSeq: 1n,
      problem: expect.stringMatching(
        /^checkpoints removed: the checkpoint of records 1-6 .* by this process/,
      ),
    });
    await log.truncate(3);
    expect(await verifyAudit(log.pool, {}, running.anchors())).toMatchObject({
      ok: false,
      firstBrokenSeq: 4n,
      problem: expect.stringMatching(/^truncated: .* records 4-6 were removed/),
    });
    // What stays open: with the checkpoints gone, a process that never signed them has nothing to compare.
    expect(await verifyAudit(log.pool, {}, checkpointsOf(log.pool).anchors())).toMatchObject({ ok: true });
  });

  it("trust only checkpoints this service signed under this CA, unrevoked, unaltered", async () => {
    const untrusted = async (signer: TlsCredentials, why: RegExp, revocations = new RevocationSet()) => {
      const log = await freshLog();
      await log.append(3);
      await checkpointsOf(log.pool, signer).checkpoint();
      const result = await verifyAudit(
        log.pool,
        {},
        checkpointsOf(log.pool, registry, revocations).anchors(),
      );
      expect(result).toMatchObject({ ok: false, firstBrokenSeq: 1n, rowsChecked: 0n });
      expect(result.problem).toMatch(
        /^untrusted checkpoint: the checkpoint of records 1-3 .* cannot be trusted: /,
      );
      expect(result.problem).toMatch(why);
    };
    await untrusted(
      await pki.issue({ kind: "service", id: "router" }),
      /signed by spiffe:\/\/fabric.test\/service\/router, not spiffe:\/\/fabric.test\/service\/registry/,
    );
    const otherCa = await createTestPki("fabric.test");
    await untrusted(
      await otherCa.issue({ kind: "service", id: "registry" }),
      /does not chain to the CA bundle/,
    );
    const expired = await pki.issue(
      { kind: "service", id: "registry" },
      { notBefore: new Date(Date.now() - 2 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) },
    );
    await untrusted(expired, /was not valid when it signed/);
    const revocations = new RevocationSet();
    const { serialHex } = inspectCertificate(registry.certificatePem);
    revocations.add({ serialHex, notAfter: new Date(Date.now() + 86_400_000) });
    await untrusted(registry, /is revoked/, revocations);

    const log = await freshLog();
    await log.append(3);
    await checkpointsOf(log.pool).checkpoint();
    await log.tamper("UPDATE audit_checkpoints SET signed_at = signed_at - interval '1 second'");
    expect((await verifyAudit(log.pool, {}, checkpointsOf(log.pool).anchors())).problem).toMatch(
      /its signature does not verify/,
    );
  });

  it("are signed on a cadence while the log grows, each one copied to the service's log", async () => {
    const log = await freshLog();
    const lines: string[] = [];
    const checkpoints = new AuditCheckpoints(log.pool, {
      service: "registry",
      trustDomain: pki.trustDomain,
      identity: () => registry,
      revocations: new RevocationSet(),
      logger: createLogger({
        service: "registry",
        destination: { write: (line: string) => void lines.push(line) },
      }),
    });
    checkpoints.start(10);
    try {
      await log.append(3);
      await vi.waitFor(() => expect(lines.some((l) => l.includes('"seq":"3"'))).toBe(true), {
        timeout: 10_000,
      });
    } finally {
      await checkpoints.stop();
    }
    const logged = (
      JSON.parse(lines.find((l) => l.includes('"seq":"3"'))!) as { auditCheckpoint: Record<string, string> }
    ).auditCheckpoint;
    const stored = await log.pool.query<{ hash: Buffer; signature: Buffer }>(
      "SELECT hash, signature FROM audit_checkpoints WHERE id = $1",
      [logged.id],
    );
    expect(stored.rows[0]!.hash.toString("hex")).toBe(logged.hash);
    expect(stored.rows[0]!.signature.toString("base64")).toBe(logged.signature);
  });

  it("are signed only over an intact chain", async () => {
    const log = await freshLog();
    await log.append(4);
    await log.tamper("UPDATE audit_events SET actor_id = 'mallory' WHERE seq = 2");
    await checkpointsOf(log.pool).checkpoint();
    expect((await log.pool.query("SELECT count(*)::int AS n FROM audit_checkpoints")).rows[0]).toEqual({
      n: 0,
    });
    expect(await verifyAudit(log.pool, {}, checkpointsOf(log.pool).anchors())).toMatchObject({
      ok: false,
      firstBrokenSeq: 2n,
      problem: expect.stringMatching(/^hash mismatch/),
    });
  });
});
