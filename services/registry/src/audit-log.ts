import { create } from "@bufbuild/protobuf";
import {
  canonicalEvent,
  chainHash,
  decodePageToken,
  encodePageToken,
  invalidArgument,
  pageSize,
  requestTimestamp,
  AUDIT_COLUMNS,
  auditEventFromRow,
  type AuditRow,
  type AuditInput,
} from "@fabric/platform";
import {
  AuditEventSchema,
  AuditOutcome,
  type AuditEvent,
} from "@fabric/proto/fabric/registry/v1/audit_pb.js";
import { callerOf, isOrgAdmin, listCluster, viewOrganization } from "./access.js";
import type { Handlers, Registry } from "./context.js";
import { principalRef, ts } from "./convert.js";

/**
 * The registry's audit log as the contract shows it. Events are appended by the platform's transaction
 * helper (audit.ts) with every change; this lists them newest first with the contract's filters, walking
 * the (at DESC, seq DESC) index, and re-verifies the hash chain over any range with the platform's own
 * canonical form and hash. Org-admins see only events recorded with their organization (the registry
 * records org_id only on events safe for an organization to see); cluster-admins only their cluster's.
 */

// Platform's audit columns plus the time as text at microsecond precision, for page tokens.
const COLUMNS = `${AUDIT_COLUMNS}, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at_text`;

interface Row extends AuditRow {
  at_text: string;
}

const OUTCOMES: Record<AuditInput["outcome"], AuditOutcome> = {
  success: AuditOutcome.SUCCESS,
  refused: AuditOutcome.DENIED,
  failed: AuditOutcome.FAILED,
};

function toProto(r: Row): AuditEvent {
  return create(AuditEventSchema, {
    seq: BigInt(r.seq),
    id: r.id,
    at: ts(r.at),
    actor: principalRef(r.actor_kind, r.actor_id),
    service: "registry",
    action: r.action,
    targetType: r.target_type,
    targetId: r.target_id,
    clusterId: r.cluster_id,
    organizationId: r.org_id,
    outcome: OUTCOMES[r.outcome],
    details: r.details,
    prevHash: r.prev_hash.toString("hex"),
    hash: r.hash.toString("hex"),
  });
}

const escapeLike = (prefix: string) => prefix.replace(/[\\%_]/g, (c) => `\\${c}`);

export function auditHandlers(r: Registry): Handlers<"listAudit" | "verifyAudit"> {
  return {
    async listAudit(req, ctx) {
      const caller = callerOf(ctx);
      const cluster = isOrgAdmin(caller) ? req.clusterId : listCluster(caller, req.clusterId);
      const org = isOrgAdmin(caller) ? viewOrganization(caller, req.organizationId) : req.organizationId;
      const where: string[] = [];
      const args: unknown[] = [];
      const add = (sql: string, value: unknown) => {
        args.push(value);
        where.push(sql.replace("?", `$${args.length}`));
      };
      if (cluster) add("cluster_id = ?", cluster);
      if (org) add("org_id = ?", org);
      if (req.actorId) add("actor_id = ?", req.actorId);
      if (req.actionPrefix) add("action LIKE ? || '%'", escapeLike(req.actionPrefix));
      if (req.targetType) add("target_type = ?", req.targetType);
      if (req.targetId) add("target_id = ?", req.targetId);
      if (req.outcome) {
        const outcome = Object.entries(OUTCOMES).find(([, v]) => v === req.outcome)?.[0];
        if (!outcome) throw invalidArgument("outcome must be SUCCESS, DENIED or FAILED");
        add("outcome = ?", outcome);
      }
      const since = req.since && requestTimestamp(req.since, "since");
      const until = req.until && requestTimestamp(req.until, "until");
      if (since) add("at >= ?", since);
      if (until) add("at < ?", until);
      const scope = `ListAudit|${JSON.stringify([cluster, org, req.actorId, req.actionPrefix, req.targetType, req.targetId, req.outcome, since, until])}`;
      const after = decodePageToken(req.pageToken, scope);
      if (after) {
        args.push(after[0], after[1]);
        where.push(`(at, seq) < ($${args.length - 1}::timestamptz, $${args.length}::bigint)`);
      }
      const size = pageSize(req.pageSize);
      args.push(size + 1);
      const { rows } = await r.pool.query<Row>(
        `SELECT ${COLUMNS} FROM audit_events ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
         ORDER BY audit_events.at DESC, audit_events.seq DESC LIMIT $${args.length}`,
        args,
      );
      const page = rows.slice(0, size);
      const last = page.at(-1);
      return {
        events: page.map(toProto),
        nextPageToken: rows.length > size && last ? encodePageToken([last.at_text, last.seq], scope) : "",
      };
    },

    async verifyAudit(req) {
      const head = await r.pool.query<{ seq: string }>("SELECT seq::text FROM audit_head");
      const headSeq = BigInt(head.rows[0]!.seq);
      const from = req.fromSeq === 0n ? 1n : req.fromSeq;
      const to = req.toSeq === 0n ? headSeq : req.toSeq;
      if (headSeq === 0n && req.toSeq === 0n) return { ok: true, rowsChecked: 0n, lastSeq: 0n, headHash: "" };
      if (from > to) throw invalidArgument(`from_seq ${from} is after to_seq ${to}`);
      let prevHash: Buffer = Buffer.alloc(32);
      if (from > 1n) {
        const anchor = await r.pool.query<{ hash: Buffer }>("SELECT hash FROM audit_events WHERE seq = $1", [
          (from - 1n).toString(),
        ]);
        if (!anchor.rows[0]) return broken(from - 1n, 0n, `seq ${from - 1n} missing`, 0n, "");
        prevHash = anchor.rows[0].hash;
      }
      let expected = from;
      let checked = 0n;
      while (expected <= to) {
        const { rows } = await r.pool.query<Row>(
          `SELECT ${COLUMNS} FROM audit_events WHERE seq >= $1 AND seq <= $2 ORDER BY audit_events.seq LIMIT 5000`,
          [expected.toString(), to.toString()],
        );
        if (rows.length === 0) break;
        for (const row of rows) {
          const event = auditEventFromRow(row);
          const last = expected - 1n;
          const lastHash = prevHash.toString("hex");
          if (event.seq !== expected)
            return broken(expected, checked, `seq ${expected} missing`, last, lastHash);
          if (!event.prevHash.equals(prevHash)) {
            return broken(event.seq, checked, `prev_hash does not match seq ${last}`, last, lastHash);
          }
          if (!chainHash(prevHash, canonicalEvent(event)).equals(event.hash)) {
            return broken(
              event.seq,
              checked,
              "hash mismatch: the record was changed after it was written",
              last,
              lastHash,
            );
          }
          prevHash = event.hash;
          expected += 1n;
          checked += 1n;
        }
      }
      if (expected <= to)
        return broken(expected, checked, `seq ${expected} missing`, expected - 1n, prevHash.toString("hex"));
      return {
        ok: true,
        rowsChecked: checked,
        lastSeq: to,
        headHash: checked > 0n || from > 1n ? prevHash.toString("hex") : "",
      };
    },
  };
}

function broken(seq: bigint, checked: bigint, problem: string, lastSeq: bigint, headHash: string) {
  return { ok: false, rowsChecked: checked, firstBrokenSeq: seq, problem, lastSeq, headHash };
}
