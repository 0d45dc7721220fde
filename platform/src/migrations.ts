import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";

/** Platform migrations every service schema gets (the audit log), applied before the service's own. */
export const PLATFORM_MIGRATIONS_DIR = fileURLToPath(new URL("../migrations", import.meta.url));

export interface MigrateOptions {
  url: string;
  schema: string;
  /** The service's folder of numbered SQL files (NNNN_name.sql). */
  dir: string;
  /** The service's login role, granted least privilege on the schema once it is migrated. */
  serviceRole?: string;
}

interface Migration {
  id: string;
  sql: string;
}

function readMigrations(dir: string, prefix: string): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((f) => ({ id: `${prefix}/${f.replace(/\.sql$/, "")}`, sql: readFileSync(join(dir, f), "utf8") }));
}

/** The platform's migrations, then the service's, in the order they apply. */
function migrationsOf(schema: string, dir: string): Migration[] {
  return [...readMigrations(PLATFORM_MIGRATIONS_DIR, "platform"), ...readMigrations(dir, schema)];
}

/**
 * Applies the platform's and the service's migrations that are not yet applied, each in its own
 * transaction, under a session advisory lock on the schema so concurrent starts apply each exactly once.
 * Returns the ids applied by this call.
 */
export async function migrate(options: MigrateOptions): Promise<string[]> {
  const migrations = migrationsOf(options.schema, options.dir);
  const client = new pg.Client({
    connectionString: options.url,
    options: `-c search_path=${options.schema}`,
  });
  await client.connect();
  const applied: string[] = [];
  try {
    await client.query("SELECT pg_advisory_lock(hashtextextended($1, 0))", [
      `fabric.migrate.${options.schema}`,
    ]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS "${options.schema}"`);
    await client.query(`CREATE TABLE IF NOT EXISTS "${options.schema}".schema_migrations (
      id text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`);
    const done = new Set(
      (await client.query<{ id: string }>(`SELECT id FROM "${options.schema}".schema_migrations`)).rows.map(
        (r) => r.id,
      ),
    );
    for (const m of migrations) {
      if (done.has(m.id)) continue;
      await client.query("BEGIN");
      try {
        await client.query(m.sql);
        await client.query(`INSERT INTO "${options.schema}".schema_migrations (id) VALUES ($1)`, [m.id]);
        await client.query("COMMIT");
      } catch (err) {
        // The migration's own error is what the operator needs; a failed ROLLBACK (connection gone) adds
        // nothing, and the connection is ended below either way.
        await client.query("ROLLBACK").catch(() => undefined);
        throw new Error(`migration ${m.id} failed: ${(err as Error).message}`);
      }
      applied.push(m.id);
    }
    if (options.serviceRole) await grantServiceRole(client, options.schema, options.serviceRole);
  } finally {
    // Ending the connection releases its advisory locks anyway; unlocking first only frees them sooner.
    await client.query("SELECT pg_advisory_unlock_all()").catch(() => undefined);
    await client.end();
  }
  return applied;
}

/** Tables the service may only read and append to: the audit log and its signed checkpoints. */
const APPEND_ONLY = ["audit_events", "audit_checkpoints"];

/**
 * The service role's privileges on its schema, set afresh (in one transaction, under the migration lock)
 * so tables added by later migrations are covered and nothing granted earlier lingers: USAGE on the
 * schema but not CREATE; read and write on its tables and sequences; on the audit log and its checkpoints
 * only SELECT and INSERT; on the chain's head only SELECT and UPDATE; the migration ledger read-only. No
 * TRUNCATE, REFERENCES or TRIGGER anywhere, and it owns nothing, so it can neither disable a trigger nor
 * alter a table. Other schemas are never granted to it.
 */
async function grantServiceRole(client: pg.Client, schema: string, role: string): Promise<void> {
  const s = client.escapeIdentifier(schema);
  const r = client.escapeIdentifier(role);
  await client.query("BEGIN");
  try {
    await client.query(`REVOKE ALL ON SCHEMA ${s} FROM PUBLIC`);
    await client.query(`GRANT USAGE ON SCHEMA ${s} TO ${r}`);
    await client.query(`REVOKE ALL ON ALL TABLES IN SCHEMA ${s} FROM ${r}`);
    await client.query(`REVOKE ALL ON ALL SEQUENCES IN SCHEMA ${s} FROM ${r}`);
    await client.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${s} TO ${r}`);
    await client.query(`GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA ${s} TO ${r}`);
    await client.query(`REVOKE INSERT, UPDATE, DELETE ON ${s}.schema_migrations FROM ${r}`);
    const appendOnly = APPEND_ONLY.map((t) => `${s}.${t}`).join(", ");
    await client.query(`REVOKE UPDATE, DELETE ON ${appendOnly} FROM ${r}`);
    await client.query(`REVOKE INSERT, DELETE ON ${s}.audit_head FROM ${r}`);
    await client.query("COMMIT");
  } catch (err) {
    // The grant's own error is what the operator needs; a failed ROLLBACK (connection gone) adds nothing.
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  }
}

// undefined_table, invalid_schema_name, insufficient_privilege: the schema is not bootstrapped (for this role).
const NOT_BOOTSTRAPPED = new Set(["42P01", "3F000", "42501"]);

/**
 * The migrations not yet applied to a schema, read with the service's own connection (which may read
 * the ledger): a service that does not bootstrap refuses to start on an outdated schema. A schema that is
 * missing, or not granted to the role, counts as nothing applied.
 */
export async function pendingMigrations(url: string, schema: string, dir: string): Promise<string[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const done = await client
      .query<{ id: string }>(`SELECT id FROM ${client.escapeIdentifier(schema)}.schema_migrations`)
      .then(
        (r) => new Set(r.rows.map((row) => row.id)),
        (err: unknown) => {
          if (NOT_BOOTSTRAPPED.has((err as { code?: string }).code ?? "")) return new Set<string>();
          throw err;
        },
      );
    return migrationsOf(schema, dir)
      .map((m) => m.id)
      .filter((id) => !done.has(id));
  } finally {
    await client.end();
  }
}
