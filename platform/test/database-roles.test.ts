// Least privilege in Postgres: what a service's own login role may not do (Postgres itself refuses), the
// start-up check that refuses a privileged role, and the bootstrap being idempotent and race-safe across
// databases of one server. Real Postgres.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ConfigError } from "../src/config.js";
import {
  bootstrapServiceDatabase,
  prepareServiceDatabase,
  roleUrl,
  scramVerifier,
} from "../src/database-roles.js";
import { createTestDatabase, type TestDatabase } from "../src/testing/database.js";
import { recordAudit } from "../src/transactions.js";
import { createPool } from "../src/database.js";
import { migrate } from "../src/migrations.js";

const empty = mkdtempSync(join(tmpdir(), "no-migrations-"));
let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase("dbroles");
  for (const schema of ["registry", "ca"]) {
    await bootstrapServiceDatabase({
      adminUrl: db.url,
      serviceUrl: db.serviceUrl(schema),
      schema,
      dir: empty,
    });
  }
});
afterAll(async () => {
  await db?.drop();
  rmSync(empty, { recursive: true, force: true });
});

/** Runs `fn` on a connection as `url`'s role, then closes it. */
async function as<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, options: "-c search_path=registry" });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** The SQLSTATE Postgres refused `sql` with (undefined when it ran). */
async function refusal(client: pg.Client, sql: string): Promise<string | undefined> {
  return client.query(sql).then(
    () => undefined,
    (err: unknown) => (err as { code?: string }).code,
  );
}

describe("a service's own database role", () => {
  it("is refused by Postgres everything that would bypass or rewrite its audit log", async () => {
    const pool = createPool({ url: db.serviceUrl("registry"), schema: "registry", max: 1 });
    try {
      // What it is for: appending audit events (and checkpoints) works.
      await recordAudit(pool, { actorId: "a", actorKind: "admin", action: "x.y", outcome: "success" });
    } finally {
      await pool.end();
    }
    await as(db.serviceUrl("registry"), async (c) => {
      expect((await c.query("SELECT current_user AS u")).rows[0]).toEqual({ u: "fabric_registry" });
      const refused: Record<string, string | undefined> = {};
      for (const sql of [
        "SET session_replication_role = replica",
        "ALTER TABLE audit_events DISABLE TRIGGER ALL",
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update",
        "DROP TRIGGER audit_events_no_update ON audit_events",
        "ALTER TABLE audit_checkpoints DISABLE TRIGGER ALL",
        "UPDATE audit_events SET actor_id = 'mallory' WHERE seq = 1",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "UPDATE audit_checkpoints SET seq = 0",
        "DELETE FROM audit_checkpoints",
        "TRUNCATE audit_checkpoints",
        "DELETE FROM audit_head",
        "INSERT INTO schema_migrations (id) VALUES ('x')",
        "CREATE TABLE sneaky (id int)",
        "SELECT * FROM ca.audit_events",
        "SET ROLE postgres",
        "CREATE ROLE sneaky",
      ]) {
        refused[sql] = await refusal(c, sql);
      }
      // 42501 insufficient_privilege, every one.
      expect(Object.entries(refused).filter(([, code]) => code !== "42501")).toEqual([]);
      // The maintenance switch of the append-only trigger is no way around missing privileges.
      await c.query("SET fabric.audit_maintenance = 'on'");
      expect(await refusal(c, "UPDATE audit_events SET actor_id = 'mallory'")).toBe("42501");
      expect(await refusal(c, "DELETE FROM audit_events")).toBe("42501");
    });
  });

  it("is not a superuser and holds no attribute, membership or ownership that could", async () => {
    const { rows } = await as(db.url, (c) =>
      c.query(
        `SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolinherit,
           (SELECT count(*)::int FROM pg_auth_members WHERE member = r.oid) AS memberships
         FROM pg_roles r WHERE rolname IN ('fabric_registry', 'fabric_ca') ORDER BY rolname`,
      ),
    );
    const unprivileged = {
      rolsuper: false,
      rolcreaterole: false,
      rolcreatedb: false,
      rolreplication: false,
      rolbypassrls: false,
      rolinherit: false,
      memberships: 0,
    };
    expect(rows).toEqual([
      { rolname: "fabric_ca", ...unprivileged },
      { rolname: "fabric_registry", ...unprivileged },
    ]);
  });
});

describe("the service's start-up", () => {
  it("bootstraps with a superuser DATABASE_URL, then runs as fabric_<service>", async () => {
    const url = await prepareServiceDatabase({ url: db.url, schema: "registry", dir: empty });
    expect(new URL(url).username).toBe("fabric_registry");
    expect(new URL(url).password).toBe("");
  });

  it("refuses to run as a role that could bypass the audit log, naming DATABASE_URL", async () => {
    const refusedWith = (p: Promise<unknown>) =>
      p.then(
        () => "started",
        (err: unknown) => (err instanceof ConfigError ? err.message : `not a ConfigError: ${String(err)}`),
      );
    // The admin as the service's own role.
    expect(
      await refusedWith(
        prepareServiceDatabase({ url: db.url, adminUrl: db.url, schema: "registry", dir: empty }),
      ),
    ).toMatch(/DATABASE_URL: the service would run as "postgres", the role that bootstraps its schema/);
    // A role that migrated and so owns its schema (it could disable the triggers), as before roles.
    const owner = `fabric_owner_${randomBytes(4).toString("hex")}`;
    await as(db.url, async (c) => {
      await c.query(`CREATE ROLE ${owner} LOGIN`);
      await c.query(`GRANT CREATE ON DATABASE ${db.name} TO ${owner}`);
    });
    await migrate({ url: roleUrl(db.url, owner), schema: "owned", dir: empty });
    try {
      expect(
        await refusedWith(
          prepareServiceDatabase({ url: roleUrl(db.url, owner), schema: "owned", dir: empty }),
        ),
      ).toMatch(
        new RegExp(`DATABASE_URL: the service must not run as "${owner}", which owns the owned schema`),
      );
    } finally {
      await as(db.url, async (c) => {
        await c.query(`DROP SCHEMA owned CASCADE`);
        await c.query(`REVOKE CREATE ON DATABASE ${db.name} FROM ${owner}`);
        await c.query(`DROP ROLE ${owner}`);
      });
    }
    // Its own role, on a schema nobody bootstrapped; a role that does not exist.
    expect(
      await refusedWith(
        prepareServiceDatabase({ url: db.serviceUrl("registry"), schema: "router", dir: empty }),
      ),
    ).toMatch(/DATABASE_URL: the router schema is not bootstrapped/);
    expect(
      await refusedWith(
        prepareServiceDatabase({ url: roleUrl(db.url, "fabric_nobody"), schema: "registry", dir: empty }),
      ),
    ).toMatch(/DATABASE_URL: cannot connect: role "fabric_nobody" does not exist/);
  });
});

describe("the bootstrap", () => {
  it("creates one role from many databases at once, and sets its password only as a SCRAM verifier", async () => {
    const role = `fabric_race_${randomBytes(4).toString("hex")}`;
    const password = randomBytes(12).toString("hex");
    const dbs = await Promise.all([1, 2, 3].map(() => createTestDatabase("dbrace")));
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    try {
      // Another bootstrap has created the role (with the wrong attributes) but not committed yet: every
      // bootstrap below finds no role, and its CREATE ROLE waits on that one.
      await holder.query("BEGIN");
      await holder.query(`CREATE ROLE ${role} LOGIN INHERIT`);
      const bootstraps = Promise.all(
        dbs.flatMap((d) =>
          ["a", "b"].map((schema) =>
            bootstrapServiceDatabase({
              adminUrl: d.url,
              serviceUrl: roleUrl(d.url, role, password),
              schema,
              dir: empty,
            }),
          ),
        ),
      );
      await vi.waitFor(
        async () => {
          // Not on the holder's connection: in a transaction, pg_stat_activity stays as first read.
          const waiting = await as(db.url, (c) =>
            c.query<{ n: number }>(
              "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'CREATE ROLE %'",
            ),
          );
          expect(waiting.rows[0]!.n).toBe(6);
        },
        { timeout: 30_000, interval: 20 },
      );
      await holder.query("COMMIT");
      await bootstraps;

      const stored = await as(db.url, (c) =>
        c.query<{ rolpassword: string; rolinherit: boolean }>(
          "SELECT rolpassword, rolinherit FROM pg_authid WHERE rolname = $1",
          [role],
        ),
      );
      // Its attributes were put right, and its password is stored as sent: a verifier, not the password.
      expect(stored.rows[0]!.rolinherit).toBe(false);
      const verifier = stored.rows[0]!.rolpassword;
      const [, iterations, salt] = /^SCRAM-SHA-256\$(\d+):([^$]+)\$/.exec(verifier)!;
      expect(scramVerifier(password, Buffer.from(salt!, "base64"), Number(iterations))).toBe(verifier);
      expect(verifier).not.toContain(password);
      // Again, as every later start does: nothing to create, nothing fails.
      await bootstrapServiceDatabase({
        adminUrl: dbs[0]!.url,
        serviceUrl: roleUrl(dbs[0]!.url, role, password),
        schema: "a",
        dir: empty,
      });
      expect(
        (await as(db.url, (c) => c.query("SELECT rolpassword FROM pg_authid WHERE rolname = $1", [role])))
          .rows[0],
      ).toEqual({
        rolpassword: verifier,
      });
    } finally {
      await holder.end();
      await Promise.all(dbs.map((d) => d.drop()));
      await as(db.url, (c) => c.query(`DROP ROLE IF EXISTS ${role}`));
    }
  });
});
