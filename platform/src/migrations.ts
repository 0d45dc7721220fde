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

/**
 * Applies the platform's and the service's migrations that are not yet applied, each in its own
 * transaction, under a session advisory lock on the schema so concurrent starts apply each exactly once.
 * Returns the ids applied by this call.
 */
export async function migrate(options: MigrateOptions): Promise<string[]> {
  const migrations = [
    ...readMigrations(PLATFORM_MIGRATIONS_DIR, "platform"),
    ...readMigrations(options.dir, options.schema),
  ];
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
        await client.query("ROLLBACK").catch(() => {});
        throw new Error(`migration ${m.id} failed: ${(err as Error).message}`);
      }
      applied.push(m.id);
    }
  } finally {
    await client.query("SELECT pg_advisory_unlock_all()").catch(() => {});
    await client.end();
  }
  return applied;
}
