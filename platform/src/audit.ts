import { createHash, randomUUID } from "node:crypto";
import type { Pool, PoolClient } from "./database.js";

/** What happened, by whom, to what. Never put a secret in details. */
export interface AuditInput {
  actorId: string;
  actorKind: string;
  action: string;
  targetType?: string;
  targetId?: string;
  clusterId?: string;
  orgId?: string;
  outcome: "success" | "refused" | "failed";
  details?: Record<string, string>;
}

export interface AuditEvent extends Required<Omit<AuditInput, "details">> {
  seq: bigint;
  id: string;
  at: Date;
  details: Record<string, string>;
  prevHash: Buffer;
  hash: Buffer;
}

const GENESIS: Buffer = Buffer.alloc(32);

/** The bytes an event's hash covers besides the previous hash: stable JSON with sorted keys. */
export function canonicalEvent(e: Omit<AuditEvent, "prevHash" | "hash">): string {
  const details = Object.fromEntries(
    Object.entries(e.details).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );
  return JSON.stringify([
    e.seq.toString(),
    e.id,
    e.at.toISOString(),
    e.actorId,
    e.actorKind,
    e.action,
    e.targetType,
    e.targetId,
    e.clusterId,
    e.orgId,
    e.outcome,
    details,
  ]);
}

export function chainHash(prevHash: Buffer, canonical: string): Buffer {
  return createHash("sha256").update(prevHash).update(canonical).digest();
}

/**
 * Appends events to the schema's chain inside the caller's transaction. Locking the head row serializes
 * appenders only from here to commit, so callers should append last (the transaction helper does).
 */
export async function appendAudit(client: PoolClient, inputs: AuditInput[]): Promise<AuditEvent[]> {
  if (inputs.length === 0) return [];
  const head = await client.query<{ seq: string; hash: Buffer }>(
    "SELECT seq::text, hash FROM audit_head FOR UPDATE",
  );
  let seq = BigInt(head.rows[0]!.seq);
  let prevHash: Buffer = head.rows[0]!.hash;
  const at = new Date();
  const events: AuditEvent[] = inputs.map((input) => {
    seq += 1n;
    const base = {
      seq,
      id: randomUUID(),
      at,
      actorId: input.actorId,
      actorKind: input.actorKind,
      action: input.action,
      targetType: input.targetType ?? "",
      targetId: input.targetId ?? "",
      clusterId: input.clusterId ?? "",
      orgId: input.orgId ?? "",
      outcome: input.outcome,
      details: input.details ?? {},
    };
    const hash = chainHash(prevHash, canonicalEvent(base));
    const event = { ...base, prevHash, hash };
    prevHash = hash;
    return event;
  });
  await client.query(
    `INSERT INTO audit_events (seq, id, at, actor_id, actor_kind, action, target_type, target_id, cluster_id,
       org_id, outcome, details, prev_hash, hash)
     SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
       $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::jsonb[], $13::bytea[], $14::bytea[])`,
    [
      events.map((e) => e.seq.toString()),
      events.map((e) => e.id),
      events.map((e) => e.at),
      events.map((e) => e.actorId),
      events.map((e) => e.actorKind),
      events.map((e) => e.action),
      events.map((e) => e.targetType),
      events.map((e) => e.targetId),
      events.map((e) => e.clusterId),
      events.map((e) => e.orgId),
      events.map((e) => e.outcome),
      events.map((e) => JSON.stringify(e.details)),
      events.map((e) => e.prevHash),
      events.map((e) => e.hash),
    ],
  );
  await client.query("UPDATE audit_head SET seq = $1, hash = $2", [seq.toString(), prevHash]);
  return events;
}

/** An audit_events row as AUDIT_COLUMNS reads it. */
export interface AuditRow {
  seq: string;
  id: string;
  at: Date;
  actor_id: string;
  actor_kind: string;
  action: string;
  target_type: string;
  target_id: string;
  cluster_id: string;
  org_id: string;
  outcome: AuditInput["outcome"];
  details: Record<string, string>;
  prev_hash: Buffer;
  hash: Buffer;
}

// seq is read as text (bigint beyond 2^53); ORDER BY clauses name audit_events.seq so they sort the
// number, not this text alias.
export const AUDIT_COLUMNS =
  "seq::text, id, at, actor_id, actor_kind, action, target_type, target_id, cluster_id, org_id, outcome, details, prev_hash, hash";

export function auditEventFromRow(r: AuditRow): AuditEvent {
  return {
    seq: BigInt(r.seq),
    id: r.id,
    at: r.at,
    actorId: r.actor_id,
    actorKind: r.actor_kind,
    action: r.action,
    targetType: r.target_type,
    targetId: r.target_id,
    clusterId: r.cluster_id,
    orgId: r.org_id,
    outcome: r.outcome,
    details: r.details,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

export interface AuditFilter {
  actorId?: string;
  action?: string;
  targetType?: string;
  targetId?: string;
  clusterId?: string;
  orgId?: string;
}

/** Newest first, paged by sequence number: pass the last seq seen as `beforeSeq` for the next page. */
export async function listAudit(
  pool: Pool,
  filter: AuditFilter,
  page: { limit: number; beforeSeq?: bigint },
): Promise<AuditEvent[]> {
  const where: string[] = [];
  const args: unknown[] = [];
  const add = (column: string, value: string | undefined) => {
    if (!value) return;
    args.push(value);
    where.push(`${column} = $${args.length}`);
  };
  add("actor_id", filter.actorId);
  add("action", filter.action);
  add("target_type", filter.targetType);
  add("target_id", filter.targetId);
  add("cluster_id", filter.clusterId);
  add("org_id", filter.orgId);
  if (page.beforeSeq !== undefined) {
    args.push(page.beforeSeq.toString());
    where.push(`seq < $${args.length}`);
  }
  args.push(page.limit);
  const sql = `SELECT ${AUDIT_COLUMNS} FROM audit_events ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
    ORDER BY audit_events.at DESC, audit_events.seq DESC LIMIT $${args.length}`;
  return (await pool.query<AuditRow>(sql, args)).rows.map(auditEventFromRow);
}

export interface AuditVerification {
  ok: boolean;
  checked: number;
  /** First row whose link is broken, and why. */
  brokenSeq?: bigint;
  reason?: string;
}

/** Walks the whole chain in sequence order and reports the first broken link. */
export async function verifyAuditChain(pool: Pool, batch = 5_000): Promise<AuditVerification> {
  let prevHash = GENESIS;
  let expectedSeq = 1n;
  let checked = 0;
  for (;;) {
    const { rows } = await pool.query<AuditRow>(
      `SELECT ${AUDIT_COLUMNS} FROM audit_events WHERE seq >= $1 ORDER BY audit_events.seq LIMIT $2`,
      [expectedSeq.toString(), batch],
    );
    if (rows.length === 0) return { ok: true, checked };
    for (const row of rows) {
      const e = auditEventFromRow(row);
      if (e.seq !== expectedSeq) {
        return { ok: false, checked, brokenSeq: expectedSeq, reason: `row ${expectedSeq} is missing` };
      }
      if (!e.prevHash.equals(prevHash)) {
        return {
          ok: false,
          checked,
          brokenSeq: e.seq,
          reason: "prev_hash does not match the previous row's hash",
        };
      }
      if (!chainHash(prevHash, canonicalEvent(e)).equals(e.hash)) {
        return { ok: false, checked, brokenSeq: e.seq, reason: "row content does not match its hash" };
      }
      prevHash = e.hash;
      expectedSeq += 1n;
      checked += 1;
    }
  }
}
