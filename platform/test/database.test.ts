import { fileURLToPath } from "node:url";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toConnectError } from "../src/errors.js";
import { listAudit, verifyAuditChain } from "../src/audit.js";
import { createPool, type Pool } from "../src/database.js";
import { migrate } from "../src/migrations.js";
import { createTestDatabase, type TestDatabase } from "../src/testing/database.js";
import { spawnTs } from "../src/testing/processes.js";
import { recordAudit, transaction } from "../src/transactions.js";

const MIGRATIONS = fileURLToPath(new URL("./fixtures/migrations", import.meta.url));
const MIGRATE = fileURLToPath(new URL("./fixtures/migrate.ts", import.meta.url));

let db: TestDatabase;
let pool: Pool;

beforeAll(async () => {
  db = await createTestDatabase("platformdb");
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

describe("migrations", () => {
  it("two processes migrating the same schema at once both succeed and apply each migration once", async () => {
    const [a, b] = await Promise.all([
      spawnTs(MIGRATE, { args: [db.url, "widgets", MIGRATIONS] }),
      spawnTs(MIGRATE, { args: [db.url, "widgets", MIGRATIONS] }),
    ]);
    const [codeA, codeB] = await Promise.all([a.exited, b.exited]);
    expect(codeA, a.output()).toBe(0);
    expect(codeB, b.output()).toBe(0);
    const appliedA = JSON.parse(a.output().trim().split("\n").pop()!) as string[];
    const appliedB = JSON.parse(b.output().trim().split("\n").pop()!) as string[];
    const all = [
      "platform/0001_audit",
      "platform/0002_audit_checkpoints",
      "widgets/0001_widgets",
      "widgets/0002_slow",
    ];
    expect([...appliedA, ...appliedB].sort()).toEqual(all);

    pool = createPool({ url: db.url, schema: "widgets" });
    const rows = await pool.query("SELECT id FROM schema_migrations ORDER BY id");
    expect(rows.rows.map((r) => r.id)).toEqual(all);
    expect(await migrate({ url: db.url, schema: "widgets", dir: MIGRATIONS })).toEqual([]);
  });
});

describe("transactions and the audit chain", () => {
  it("commit a change with its audit event, or neither", async () => {
    await transaction(pool, async (tx) => {
      await tx.query("INSERT INTO widgets (id, name) VALUES ('w1', 'one')");
      tx.audit({
        actorId: "alice",
        actorKind: "admin",
        action: "widget.create",
        targetType: "widget",
        targetId: "w1",
        outcome: "success",
      });
    });
    await expect(
      transaction(pool, async (tx) => {
        await tx.query("INSERT INTO widgets (id, name) VALUES ('w2', 'two')");
        tx.audit({
          actorId: "alice",
          actorKind: "admin",
          action: "widget.create",
          targetId: "w2",
          outcome: "success",
        });
        throw new Error("boom");
      }),
    ).rejects.toThrow("boom");
    expect((await pool.query("SELECT id FROM widgets ORDER BY id")).rows).toEqual([{ id: "w1" }]);
    const events = await listAudit(pool, {}, { limit: 10 });
    expect(events.map((e) => e.targetId)).toEqual(["w1"]);
  });

  it("chains concurrent appends without gaps, lists newest first, and verifies clean", async () => {
    await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        recordAudit(pool, {
          actorId: `n${i}`,
          actorKind: "node",
          action: "probe",
          outcome: i % 2 ? "refused" : "success",
          details: { i: String(i) },
        }),
      ),
    );
    const page1 = await listAudit(pool, {}, { limit: 25 });
    const page2 = await listAudit(pool, {}, { limit: 25, beforeSeq: page1.at(-1)!.seq });
    expect(page1.length + page2.length).toBe(41);
    const seqs = [...page1, ...page2].map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => (a > b ? -1 : 1)));
    expect(await verifyAuditChain(pool)).toEqual({ ok: true, checked: 41 });
  });

  it("refuses updates from the application and pinpoints a tampered row", async () => {
    await expect(pool.query("UPDATE audit_events SET actor_id = 'mallory' WHERE seq = 7")).rejects.toThrow(
      /append-only/,
    );
    const client = await pool.connect();
    try {
      // What an attacker with table-owner rights could do: bypass the trigger and edit a row.
      await client.query("BEGIN");
      await client.query("SET LOCAL fabric.audit_maintenance = 'on'");
      await client.query("UPDATE audit_events SET actor_id = 'mallory' WHERE seq = 7");
      await client.query("COMMIT");
    } finally {
      client.release();
    }
    const result = await verifyAuditChain(pool);
    expect(result).toMatchObject({ ok: false, brokenSeq: 7n, checked: 6 });
    expect(result.reason).toMatch(/does not match its hash/);
  });
});

describe("errors from the store", () => {
  it("maps a value Postgres cannot store (SQLSTATE class 22) to InvalidArgument, saying what to fix", async () => {
    const pool = createPool({ url: db.url, schema: "public" });
    try {
      const failures = await Promise.all(
        ["SELECT $1::text", "SELECT $1::int"].map((sql, i) =>
          pool.query(sql, [i === 0 ? "a\u0000b" : "99999999999"]).then(
            () => undefined,
            (err: unknown) => err,
          ),
        ),
      );
      for (const err of failures) {
        expect((err as { code: string }).code).toMatch(/^22/);
        const mapped = toConnectError(err);
        expect(mapped.code).toBe(Code.InvalidArgument);
        expect(mapped.rawMessage).toMatch(/fix the input/);
      }
    } finally {
      await pool.end();
    }
  });
});
