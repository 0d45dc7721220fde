import { createHash, randomUUID } from "node:crypto";
import type { Pool, PoolClient } from "./database.js";
import { invalidArgument } from "./errors.js";

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

/** prev_hash of the first record. */
export const GENESIS: Buffer = Buffer.alloc(32);

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
  /** Exactly this action. */
  action?: string;
  /** Actions starting with this. */
  actionPrefix?: string;
  targetType?: string;
  targetId?: string;
  clusterId?: string;
  orgId?: string;
  outcome?: AuditInput["outcome"];
  /** At or after. */
  since?: Date;
  /** Before. */
  until?: Date;
}

const escapeLike = (prefix: string) => prefix.replace(/[\\%_]/g, (c) => `\\${c}`);

/**
 * Newest first (by time, then sequence number), filters combined with AND. Paged by the last event
 * seen: pass its seq as `beforeSeq` for the next page, which continues in the same order.
 */
export async function listAudit(
  pool: Pool,
  filter: AuditFilter,
  page: { limit: number; beforeSeq?: bigint },
): Promise<AuditEvent[]> {
  const where: string[] = [];
  const args: unknown[] = [];
  const add = (sql: string, value: unknown) => {
    if (value === undefined || value === "") return;
    args.push(value);
    where.push(sql.replaceAll("?", `$${args.length}`));
  };
  add("actor_id = ?", filter.actorId);
  add("action = ?", filter.action);
  add("action LIKE ? || '%'", filter.actionPrefix && escapeLike(filter.actionPrefix));
  add("target_type = ?", filter.targetType);
  add("target_id = ?", filter.targetId);
  add("cluster_id = ?", filter.clusterId);
  add("org_id = ?", filter.orgId);
  add("outcome = ?", filter.outcome);
  add("at >= ?", filter.since);
  add("at < ?", filter.until);
  // Keyset on (at, seq) read from the row itself, at the database's full time precision.
  add(
    "(at, seq) < ((SELECT at FROM audit_events WHERE seq = ?::bigint), ?::bigint)",
    page.beforeSeq?.toString(),
  );
  args.push(page.limit);
  const sql = `SELECT ${AUDIT_COLUMNS} FROM audit_events ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
    ORDER BY audit_events.at DESC, audit_events.seq DESC LIMIT $${args.length}`;
  return (await pool.query<AuditRow>(sql, args)).rows.map(auditEventFromRow);
}

/** A range of the chain to verify; 0 (or absent) means from the first record, or up to the head. */
export interface AuditRange {
  fromSeq?: bigint;
  toSeq?: bigint;
}

/** What VerifyAudit answers (the contract's VerifyAuditResponse). */
export interface AuditVerificationResult {
  ok: boolean;
  rowsChecked: bigint;
  /** 0 when ok. */
  firstBrokenSeq: bigint;
  /** Empty when ok. */
  problem: string;
  lastSeq: bigint;
  /** Hash of record lastSeq, lowercase hex; empty when nothing was checked. */
  headHash: string;
}

/** A problem found at one record. */
export interface ChainProblem {
  seq: bigint;
  problem: string;
}

/**
 * What a verification checks besides the links of the chain: the signed checkpoints
 * (audit-checkpoints.ts). `check` sees each batch of records whose links are intact, in order;
 * `beyondHead` runs when the walk reached the head, for records a checkpoint covers that are gone.
 */
export interface ChainAnchors {
  check(events: AuditEvent[]): Promise<ChainProblem | undefined>;
  beyondHead(headSeq: bigint): Promise<ChainProblem | undefined>;
}

/**
 * The first broken link among events that should follow `prevHash` from `expectedSeq` on: a missing
 * record, a prev_hash that is not its predecessor's hash, or content that does not match its hash.
 */
export function firstBrokenLink(
  prevHash: Buffer,
  expectedSeq: bigint,
  events: AuditEvent[],
): (ChainProblem & { index: number }) | undefined {
  let prev = prevHash;
  for (const [index, e] of events.entries()) {
    const seq = expectedSeq + BigInt(index);
    if (e.seq !== seq) return { index, seq, problem: `seq ${seq} missing` };
    if (!e.prevHash.equals(prev)) return { index, seq, problem: `prev_hash does not match seq ${seq - 1n}` };
    if (!chainHash(prev, canonicalEvent(e)).equals(e.hash)) {
      return {
        index,
        seq,
        problem:
          "hash mismatch: the record's content does not match its hash (it was changed after it was written)",
      };
    }
    prev = e.hash;
  }
  return undefined;
}

const BATCH = 5_000;

/**
 * Walks the chain over a range in sequence order and reports the first record where it breaks: its
 * links (every record), and, with `anchors`, the signed checkpoints. A range ending at the head also
 * reports records a checkpoint covers that are no longer there.
 */
export async function verifyAudit(
  pool: Pool,
  range: AuditRange,
  anchors?: ChainAnchors,
): Promise<AuditVerificationResult> {
  const head = await pool.query<{ seq: string }>("SELECT seq::text FROM audit_head");
  const headSeq = BigInt(head.rows[0]!.seq);
  const from = range.fromSeq || 1n;
  const to = range.toSeq || headSeq;
  const reachesHead = !range.toSeq || range.toSeq >= headSeq;
  let checked = 0n;
  let prevHash = GENESIS;
  const broken = (p: ChainProblem): AuditVerificationResult => ({
    ok: false,
    rowsChecked: checked,
    firstBrokenSeq: p.seq,
    problem: p.problem,
    lastSeq: p.seq - 1n,
    headHash: p.seq - 1n >= 1n ? prevHash.toString("hex") : "",
  });
  if (headSeq === 0n && !range.toSeq) {
    const gone = await anchors?.beyondHead(0n);
    if (gone) return broken(gone);
    return { ok: true, rowsChecked: 0n, firstBrokenSeq: 0n, problem: "", lastSeq: 0n, headHash: "" };
  }
  if (from > to) throw invalidArgument(`from_seq ${from} is after to_seq ${to}`);
  if (from > 1n) {
    const anchor = await pool.query<{ hash: Buffer }>("SELECT hash FROM audit_events WHERE seq = $1", [
      (from - 1n).toString(),
    ]);
    if (!anchor.rows[0]) {
      return {
        ...broken({ seq: from - 1n, problem: `seq ${from - 1n} missing` }),
        lastSeq: 0n,
        headHash: "",
      };
    }
    prevHash = anchor.rows[0].hash;
  }
  let expected = from;
  while (expected <= to) {
    const { rows } = await pool.query<AuditRow>(
      `SELECT ${AUDIT_COLUMNS} FROM audit_events WHERE seq >= $1 AND seq <= $2 ORDER BY audit_events.seq LIMIT $3`,
      [expected.toString(), to.toString(), BATCH],
    );
    if (rows.length === 0) break;
    const events = rows.map(auditEventFromRow);
    const link = firstBrokenLink(prevHash, expected, events);
    const intact = link ? events.slice(0, link.index) : events;
    // A checkpoint problem at an earlier record than the broken link is the first problem.
    const anchored = intact.length > 0 ? await anchors?.check(intact) : undefined;
    const problem = anchored ?? link;
    const good = problem ? intact.filter((e) => e.seq < problem.seq) : intact;
    checked += BigInt(good.length);
    prevHash = good.at(-1)?.hash ?? prevHash;
    if (problem) return broken(problem);
    expected += BigInt(events.length);
  }
  if (expected <= to) return broken({ seq: expected, problem: `seq ${expected} missing` });
  if (reachesHead) {
    const gone = await anchors?.beyondHead(to);
    if (gone) return broken(gone);
  }
  return {
    ok: true,
    rowsChecked: checked,
    firstBrokenSeq: 0n,
    problem: "",
    lastSeq: to,
    headHash: checked > 0n || from > 1n ? prevHash.toString("hex") : "",
  };
}

export interface AuditVerification {
  ok: boolean;
  checked: number;
  /** First row whose link is broken, and why. */
  brokenSeq?: bigint;
  reason?: string;
}

/** The links of the whole chain (no checkpoints), for tests and benches reading the database directly. */
export async function verifyAuditChain(pool: Pool): Promise<AuditVerification> {
  const r = await verifyAudit(pool, {});
  return r.ok
    ? { ok: true, checked: Number(r.rowsChecked) }
    : { ok: false, checked: Number(r.rowsChecked), brokenSeq: r.firstBrokenSeq, reason: r.problem };
}
