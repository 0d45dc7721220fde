// What the services hold, read straight from Postgres, so a test can prove a refusal changed nothing.
import { createPool, type Pool } from "@fabric/platform";

/** Schemas of the four services. */
export const SERVICE_SCHEMAS = ["ca", "enrollment", "registry", "router"] as const;

// The audit log is where refused attempts are supposed to land, and migrations never change at run time.
const NOT_STATE = new Set(["audit_events", "audit_head", "audit_checkpoints", "schema_migrations"]);

export interface FingerprintOptions {
  /** In these tables (`schema.table`), digest only the rows whose text contains `mentioning`. */
  narrowed?: { tables: string[]; mentioning: string };
}

/**
 * A digest of every row of every service table (audit log excluded): `schema.table` → `count:md5`.
 * Two equal fingerprints mean no row was added, removed or changed in between.
 */
export async function stateFingerprint(
  databaseUrl: string,
  options: FingerprintOptions = {},
): Promise<Record<string, string>> {
  const client = connect(databaseUrl);
  try {
    const { rows: tables } = await client.query<{ schema: string; name: string }>(
      `SELECT table_schema AS schema, table_name AS name FROM information_schema.tables
       WHERE table_type = 'BASE TABLE' AND table_schema = ANY($1) ORDER BY 1, 2`,
      [SERVICE_SCHEMAS],
    );
    const out: Record<string, string> = {};
    for (const { schema, name } of tables) {
      if (NOT_STATE.has(name)) continue;
      const narrowed = options.narrowed?.tables.includes(`${schema}.${name}`);
      const { rows } = await client.query<{ n: string; digest: string | null }>(
        `SELECT count(*)::text AS n, md5(string_agg(t::text, '|' ORDER BY t::text)) AS digest
         FROM "${schema}"."${name}" t${narrowed ? " WHERE strpos(t::text, $1) > 0" : ""}`,
        narrowed ? [options.narrowed!.mentioning] : [],
      );
      out[`${schema}.${name}`] = `${rows[0]!.n}:${rows[0]!.digest ?? ""}`;
    }
    return out;
  } finally {
    await client.end();
  }
}

export interface AuditRow {
  seq: string;
  action: string;
  actor_id: string;
  actor_kind: string;
  target_type: string;
  target_id: string;
  cluster_id: string;
  org_id: string;
  outcome: string;
  details: Record<string, string>;
}

/** The highest audit sequence number of a service's log, to read only what comes after. */
export async function auditHead(databaseUrl: string, schema: string): Promise<bigint> {
  const client = connect(databaseUrl);
  try {
    const { rows } = await client.query<{ seq: string }>(
      `SELECT coalesce(max(seq), 0)::text AS seq FROM "${schema}".audit_events`,
    );
    return BigInt(rows[0]!.seq);
  } finally {
    await client.end();
  }
}

/** Audit events of a service written after `afterSeq`, oldest first. */
export async function auditSince(databaseUrl: string, schema: string, afterSeq: bigint): Promise<AuditRow[]> {
  const client = connect(databaseUrl);
  try {
    const { rows } = await client.query<AuditRow>(
      `SELECT seq::text, action, actor_id, actor_kind, target_type, target_id, cluster_id, org_id, outcome, details
       FROM "${schema}".audit_events WHERE seq > $1 ORDER BY seq`,
      [afterSeq.toString()],
    );
    return rows;
  } finally {
    await client.end();
  }
}

// The platform's pool, bound to the public schema: every query here names its schema.
function connect(databaseUrl: string): Pool {
  return createPool({ url: databaseUrl, schema: "public", max: 1 });
}
