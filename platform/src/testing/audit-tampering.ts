import { AUDIT_COLUMNS, auditEventFromRow, canonicalEvent, chainHash, type AuditRow } from "../audit.js";
import { createPool } from "../database.js";

/**
 * What a Postgres superuser can do to a service's audit log, for the tests that prove it shows: each runs in
 * one transaction with triggers off (session_replication_role = replica), on `schema` of `adminUrl`.
 */
async function asSuperuser(
  adminUrl: string,
  schema: string,
  fn: (q: (sql: string, args?: unknown[]) => Promise<{ rows: AuditRow[] }>) => Promise<void>,
): Promise<void> {
  const pool = createPool({ url: adminUrl, schema, max: 1 });
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await client.query("SET LOCAL session_replication_role = replica");
    await fn((sql, args) => client.query<AuditRow>(sql, args));
    await client.query("COMMIT");
  } finally {
    client.release();
    await pool.end();
  }
}

/** Changes record `seq`, then recomputes every later hash and the head's, so the chain alone verifies. */
export function rewriteAuditRecord(adminUrl: string, schema: string, seq: bigint): Promise<void> {
  return asSuperuser(adminUrl, schema, async (q) => {
    await q("UPDATE audit_events SET actor_id = 'mallory' WHERE seq = $1", [seq.toString()]);
    const { rows } = await q(
      `SELECT ${AUDIT_COLUMNS} FROM audit_events WHERE seq >= $1 ORDER BY audit_events.seq`,
      [seq.toString()],
    );
    const before = await q("SELECT hash FROM audit_events WHERE seq = $1", [(seq - 1n).toString()]);
    let prev = before.rows[0]?.hash ?? Buffer.alloc(32);
    for (const row of rows) {
      const hash = chainHash(prev, canonicalEvent(auditEventFromRow(row)));
      await q("UPDATE audit_events SET prev_hash = $2, hash = $3 WHERE seq = $1", [row.seq, prev, hash]);
      prev = hash;
    }
    await q("UPDATE audit_head SET hash = $1", [prev]);
  });
}

/** Deletes every record after `seq` and moves the head back to it. */
export function truncateAuditLog(adminUrl: string, schema: string, seq: bigint): Promise<void> {
  return asSuperuser(adminUrl, schema, async (q) => {
    await q("DELETE FROM audit_events WHERE seq > $1", [seq.toString()]);
    const last = await q("SELECT hash FROM audit_events WHERE seq = $1", [seq.toString()]);
    await q("UPDATE audit_head SET seq = $1, hash = $2", [
      seq.toString(),
      last.rows[0]?.hash ?? Buffer.alloc(32),
    ]);
  });
}

/** Runs `sql` on the audit tables with triggers off (e.g. deleting checkpoints). */
export function tamperWithAudit(adminUrl: string, schema: string, sql: string): Promise<void> {
  return asSuperuser(adminUrl, schema, async (q) => {
    await q(sql);
  });
}
