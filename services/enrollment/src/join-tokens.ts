import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  actorOf,
  failedPrecondition,
  invalidArgument,
  notFound,
  requireCluster,
  transaction,
  unauthenticated,
  type Principal,
  type Tx,
} from "@fabric/platform";
import { PrincipalSchema } from "@fabric/proto/fabric/common/v1/common_pb.js";
import {
  JoinTokenSchema,
  JoinTokenState,
  type CreateJoinTokenRequest,
  type JoinToken,
  type ListJoinTokensRequest,
} from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { ENROLLMENT_SERVICE, principalKindOf, type Enrollment } from "./context.js";
import { listClusterPage } from "./cluster-pages.js";
import { boundedText, durationField, requireClusterId, roleList } from "./validation.js";

/**
 * Join tokens `<id>.<secret>`: the id (16 hex digits) is public and names the row; the secret (32 random
 * bytes, base64url) is shown once and stored only as its SHA-256, compared in constant time.
 */
const TOKEN_ID = /^[0-9a-f]{16}$/;
const TOKEN = /^([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/;

export interface JoinTokenRow {
  id: string;
  seq: string;
  cluster_id: string;
  allowed_roles: string[];
  max_uses: number;
  uses: number;
  auto_approve: boolean;
  description: string;
  created_at: Date;
  expires_at: Date;
  revoked_at: Date | null;
  created_by_kind: string;
  created_by_id: string;
}

const COLUMNS = `id, seq::text, cluster_id, allowed_roles, max_uses, uses, auto_approve, description, created_at,
  expires_at, revoked_at, created_by_kind, created_by_id`;

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest();

export interface ParsedJoinToken {
  id: string;
  secret: Buffer;
}

/** Splits a presented token; the message never echoes it. */
export function parseJoinToken(token: string): ParsedJoinToken {
  if (!token) throw invalidArgument("token is required: the <id>.<secret> join token an admin created");
  const match = TOKEN.exec(token);
  if (!match) throw invalidArgument("token is malformed: expected <id>.<secret> as printed at creation");
  return { id: match[1]!, secret: Buffer.from(match[2]!, "base64url") };
}

export function tokenState(row: JoinTokenRow, now = new Date()): JoinTokenState {
  if (row.revoked_at) return JoinTokenState.REVOKED;
  if (row.expires_at <= now) return JoinTokenState.EXPIRED;
  if (row.uses >= row.max_uses) return JoinTokenState.EXHAUSTED;
  return JoinTokenState.ACTIVE;
}

export function joinTokenMessage(row: JoinTokenRow): JoinToken {
  return create(JoinTokenSchema, {
    id: row.id,
    clusterId: row.cluster_id,
    allowedRoles: row.allowed_roles,
    uses: row.uses,
    maxUses: row.max_uses,
    autoApprove: row.auto_approve,
    description: row.description,
    state: tokenState(row),
    createdAt: timestampFromDate(row.created_at),
    expiresAt: timestampFromDate(row.expires_at),
    revoked: row.revoked_at !== null,
    ...(row.revoked_at ? { revokedAt: timestampFromDate(row.revoked_at) } : {}),
    createdBy: create(PrincipalSchema, { kind: principalKindOf(row.created_by_kind), id: row.created_by_id }),
  });
}

export async function createJoinToken(
  deps: Enrollment,
  principal: Principal,
  req: CreateJoinTokenRequest,
): Promise<{ token: string; row: JoinTokenRow }> {
  const clusterId = requireClusterId(req.clusterId);
  requireCluster(principal, clusterId);
  const allowedRoles = roleList(req.allowedRoles, "allowed_roles");
  if (req.maxUses > 1000) throw invalidArgument("max_uses may be at most 1000");
  const maxUses = req.maxUses === 0 ? 1 : req.maxUses;
  const requestedTtl = durationField(req.ttl, "ttl");
  const ttlMs = requestedTtl === 0 ? deps.config.joinTokenDefaultTtlMs : requestedTtl;
  if (ttlMs < 1_000) throw invalidArgument("ttl must be at least 1 second (0 = the default of 1 hour)");
  if (ttlMs > deps.config.joinTokenMaxTtlMs) {
    throw invalidArgument(
      `ttl may be at most ${deps.config.joinTokenMaxTtlMs / 3_600_000} hours; create a new token when it runs out`,
    );
  }
  const description = boundedText(req.description, "description", 256);

  const id = randomBytes(8).toString("hex");
  const secret = randomBytes(32);
  const actor = actorOf(principal);
  const row = await transaction(deps.pool, async (tx) => {
    const inserted = await tx.query<JoinTokenRow>(
      `INSERT INTO join_tokens (id, secret_sha256, cluster_id, allowed_roles, max_uses, auto_approve, description,
         expires_at, created_by_kind, created_by_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8::double precision / 1000), $9, $10)
       RETURNING ${COLUMNS}`,
      [
        id,
        sha256(secret),
        clusterId,
        allowedRoles,
        maxUses,
        req.autoApprove,
        description,
        ttlMs,
        actor.kind,
        actor.id,
      ],
    );
    tx.audit({
      actorId: actor.id,
      actorKind: actor.kind,
      action: "join_token.create",
      targetType: "join_token",
      targetId: id,
      clusterId,
      outcome: "success",
      details: {
        allowedRoles: allowedRoles.join(","),
        maxUses: String(maxUses),
        ttlMs: String(ttlMs),
        autoApprove: String(req.autoApprove),
      },
    });
    return inserted.rows[0]!;
  });
  return { token: `${id}.${secret.toString("base64url")}`, row };
}

const STATE_FILTERS: Partial<Record<JoinTokenState, string>> = {
  [JoinTokenState.ACTIVE]: "revoked_at IS NULL AND expires_at > now() AND uses < max_uses",
  [JoinTokenState.EXHAUSTED]: "revoked_at IS NULL AND expires_at > now() AND uses >= max_uses",
  [JoinTokenState.EXPIRED]: "revoked_at IS NULL AND expires_at <= now()",
  [JoinTokenState.REVOKED]: "revoked_at IS NOT NULL",
};

export async function listJoinTokens(
  deps: Enrollment,
  principal: Principal,
  req: ListJoinTokensRequest,
): Promise<{ rows: JoinTokenRow[]; nextPageToken: string }> {
  return listClusterPage<JoinTokenRow>(
    deps,
    principal,
    {
      rpc: "ListJoinTokens",
      table: "join_tokens",
      columns: COLUMNS,
      noun: "join token",
      stateFilters: STATE_FILTERS,
    },
    req,
  );
}

export async function revokeJoinToken(
  deps: Enrollment,
  principal: Principal,
  tokenId: string,
): Promise<JoinTokenRow> {
  if (!tokenId) throw invalidArgument("token_id is required");
  if (tokenId.includes(".")) {
    throw invalidArgument("pass only the token id (the part before the '.'); never send the full token here");
  }
  if (!TOKEN_ID.test(tokenId)) throw invalidArgument("token_id is not a join token id (16 hex digits)");
  const actor = actorOf(principal);
  return transaction(deps.pool, async (tx) => {
    const found = await tx.query<JoinTokenRow>(
      `SELECT ${COLUMNS} FROM join_tokens WHERE id = $1 FOR UPDATE`,
      [tokenId],
    );
    const row = found.rows[0];
    if (!row)
      throw notFound(`join token ${tokenId} does not exist (expired tokens are deleted after a while)`);
    requireCluster(principal, row.cluster_id);
    if (row.revoked_at) return row;
    const updated = await tx.query<JoinTokenRow>(
      `UPDATE join_tokens SET revoked_at = now() WHERE id = $1 RETURNING ${COLUMNS}`,
      [tokenId],
    );
    tx.audit({
      actorId: actor.id,
      actorKind: actor.kind,
      action: "join_token.revoke",
      targetType: "join_token",
      targetId: tokenId,
      clusterId: row.cluster_id,
      outcome: "success",
      details: { usesBefore: String(row.uses) },
    });
    return updated.rows[0]!;
  });
}

/**
 * The token row whose secret matches, or Unauthenticated (ResourceExhausted once the token id's failure
 * budget is spent; a right secret is never held back by it). The comparison is constant-time over the
 * stored hash; unknown ids and wrong secrets get the same answer.
 */
export async function authenticateJoinToken(
  deps: Enrollment,
  presented: ParsedJoinToken,
): Promise<JoinTokenRow> {
  const { rows } = await deps.pool.query<JoinTokenRow & { secret_sha256: Buffer }>(
    `SELECT ${COLUMNS}, secret_sha256 FROM join_tokens WHERE id = $1`,
    [presented.id],
  );
  const row = rows[0];
  const expected = row?.secret_sha256 ?? Buffer.alloc(32);
  const matches = timingSafeEqual(sha256(presented.secret), expected);
  if (!row || !matches) {
    throw deps.limits.credentialFailed(
      "Join",
      "join-token",
      presented.id,
      unauthenticated("the join token is unknown or its secret is wrong; ask an admin for a new token"),
    );
  }
  return row;
}

/** Refuses a token that cannot be used now, saying why. */
export function requireUsable(row: JoinTokenRow, now = new Date()): void {
  switch (tokenState(row, now)) {
    case JoinTokenState.REVOKED:
      throw failedPrecondition(`join token ${row.id} has been revoked; ask an admin for a new token`);
    case JoinTokenState.EXPIRED:
      throw failedPrecondition(`join token ${row.id} has expired; ask an admin for a new token`);
    case JoinTokenState.EXHAUSTED:
      throw failedPrecondition(
        `join token ${row.id} has been used ${row.uses} of ${row.max_uses} times; ask an admin for a new token`,
      );
    default:
  }
}

/**
 * Takes one use of the token inside the caller's transaction, or returns undefined when it is no longer
 * usable. One guarded UPDATE: concurrent joins serialize on the row and can never pass max_uses.
 */
export async function takeJoinTokenUse(tx: Tx, tokenId: string): Promise<JoinTokenRow | undefined> {
  const { rows } = await tx.query<JoinTokenRow>(
    `UPDATE join_tokens SET uses = uses + 1
     WHERE id = $1 AND revoked_at IS NULL AND expires_at > now() AND uses < max_uses
     RETURNING ${COLUMNS}`,
    [tokenId],
  );
  return rows[0];
}

/** The token as stored now (to explain why takeJoinTokenUse refused). */
export async function readJoinToken(deps: Enrollment, tokenId: string): Promise<JoinTokenRow | undefined> {
  const { rows } = await deps.pool.query<JoinTokenRow>(`SELECT ${COLUMNS} FROM join_tokens WHERE id = $1`, [
    tokenId,
  ]);
  return rows[0];
}

/** Deletes tokens expired longer than the retention period, each with its audit event. */
export async function deleteExpiredJoinTokens(deps: Enrollment): Promise<number> {
  return transaction(deps.pool, async (tx) => {
    const { rows } = await tx.query<{ id: string; cluster_id: string; uses: number }>(
      `DELETE FROM join_tokens WHERE expires_at < now() - make_interval(secs => $1::double precision / 1000)
       RETURNING id, cluster_id, uses`,
      [deps.config.expiredTokenRetentionMs],
    );
    for (const row of rows) {
      tx.audit({
        actorId: ENROLLMENT_SERVICE.id,
        actorKind: ENROLLMENT_SERVICE.kind,
        action: "join_token.delete_expired",
        targetType: "join_token",
        targetId: row.id,
        clusterId: row.cluster_id,
        outcome: "success",
        details: { uses: String(row.uses) },
      });
    }
    return rows.length;
  });
}
