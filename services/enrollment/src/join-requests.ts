import { createHash, randomBytes, randomUUID } from "node:crypto";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  actorOf,
  failedPrecondition,
  invalidArgument,
  notFound,
  permissionDenied,
  requireCluster,
  transaction,
  type Principal,
  type Tx,
} from "@fabric/platform";
import { NodeFactsSchema, PrincipalSchema } from "@fabric/proto/fabric/common/v1/common_pb.js";
import {
  JoinRequestSchema,
  JoinRequestState,
  type EnrollmentServiceJoinRequest,
  type JoinRequest,
  type ListJoinRequestsRequest,
} from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { ANONYMOUS, ENROLLMENT_SERVICE, principalKindOf, type Enrollment } from "./context.js";
import { listClusterPage } from "./cluster-pages.js";
import {
  authenticateJoinToken,
  parseJoinToken,
  readJoinToken,
  requireUsable,
  takeJoinTokenUse,
} from "./join-tokens.js";
import {
  boundedText,
  capabilityList,
  checkCsr,
  checkFacts,
  nodeNameFor,
  requireClusterId,
  requireJoinRequestId,
  roleList,
} from "./validation.js";

/** Stored states; `approving` (decided, node not yet registered) is shown as PENDING. */
export type StoredState = "pending" | "approving" | "approved" | "rejected" | "expired";

export interface JoinRequestRow {
  id: string;
  seq: string;
  token_id: string;
  cluster_id: string;
  node_name: string;
  facts: Buffer;
  capabilities: string[];
  requested_roles: string[];
  allowed_roles: string[];
  auto_approve: boolean;
  csr_pem: string;
  public_key_spki: Buffer;
  public_key_sha256: string;
  challenge: Buffer;
  peer_address: string;
  state: StoredState;
  created_at: Date;
  expires_at: Date;
  decided_at: Date | null;
  decided_by_kind: string | null;
  decided_by_id: string | null;
  rejection_reason: string;
  granted_roles: string[];
  node_id: string | null;
  certificate_lifetime_ms: string | null;
  certificate_serial: string | null;
  certificate_pem: string | null;
  chain_pem: string[] | null;
  ca_bundle_pem: string | null;
  certificate_not_after: Date | null;
  registered_at: Date | null;
}

export const REQUEST_COLUMNS = `id, seq::text, token_id, cluster_id, node_name, facts, capabilities, requested_roles,
  allowed_roles, auto_approve, csr_pem, public_key_spki, public_key_sha256, challenge, peer_address, state,
  created_at, expires_at, decided_at, decided_by_kind, decided_by_id, rejection_reason, granted_roles, node_id,
  certificate_lifetime_ms::text, certificate_serial, certificate_pem, chain_pem, ca_bundle_pem,
  certificate_not_after, registered_at`;

/** The state callers see: a pending request past its expiry is EXPIRED even before the job marks it. */
export function visibleState(row: JoinRequestRow, now = new Date()): JoinRequestState {
  switch (row.state) {
    case "pending":
      return row.expires_at <= now ? JoinRequestState.EXPIRED : JoinRequestState.PENDING;
    case "approving":
      return JoinRequestState.PENDING;
    case "approved":
      return JoinRequestState.APPROVED;
    case "rejected":
      return JoinRequestState.REJECTED;
    case "expired":
      return JoinRequestState.EXPIRED;
  }
}

export function joinRequestMessage(row: JoinRequestRow): JoinRequest {
  const state = visibleState(row);
  const decided = state === JoinRequestState.APPROVED || state === JoinRequestState.REJECTED;
  const approved = state === JoinRequestState.APPROVED;
  return create(JoinRequestSchema, {
    id: row.id,
    clusterId: row.cluster_id,
    tokenId: row.token_id,
    nodeName: row.node_name,
    facts: fromBinary(NodeFactsSchema, row.facts),
    capabilities: row.capabilities,
    requestedRoles: row.requested_roles,
    allowedRoles: row.allowed_roles,
    publicKeySha256: row.public_key_sha256,
    peerAddress: row.peer_address,
    state,
    createdAt: timestampFromDate(row.created_at),
    expiresAt: timestampFromDate(row.expires_at),
    ...(decided && row.decided_at ? { decidedAt: timestampFromDate(row.decided_at) } : {}),
    ...(decided && row.decided_by_kind
      ? {
          decidedBy: create(PrincipalSchema, {
            kind: principalKindOf(row.decided_by_kind),
            id: row.decided_by_id!,
          }),
        }
      : {}),
    rejectionReason: state === JoinRequestState.REJECTED ? row.rejection_reason : "",
    grantedRoles: approved ? row.granted_roles : [],
    nodeId: approved ? (row.node_id ?? "") : "",
    certificateSerial: approved ? (row.certificate_serial ?? "") : "",
  });
}

export async function readJoinRequest(deps: Enrollment, id: string): Promise<JoinRequestRow | undefined> {
  const { rows } = await deps.pool.query<JoinRequestRow>(
    `SELECT ${REQUEST_COLUMNS} FROM join_requests WHERE id = $1`,
    [id],
  );
  return rows[0];
}

/** A fresh node id for an approval (the certificate CN and registry node id). */
export function newNodeId(): string {
  return `node-${randomBytes(8).toString("hex")}`;
}

/**
 * Join: validates everything that costs nothing first, verifies the CSR before touching the token, then
 * authenticates the token, checks its scope, and in one transaction takes a use and creates the request
 * (already decided when the token auto-approves: the enrollment service is the decider).
 */
export async function join(
  deps: Enrollment,
  req: EnrollmentServiceJoinRequest,
  address: string,
): Promise<JoinRequestRow> {
  const attempt = deps.limits.admitAddress("Join", address);
  const presented = parseJoinToken(req.token);
  if (req.clusterId) requireClusterId(req.clusterId);
  checkFacts(req.facts);
  const nodeName = nodeNameFor(req.nodeName, req.facts?.hostname ?? "");
  const capabilities = capabilityList(req.capabilities);
  const requested = roleList(req.requestedRoles, "requested_roles");
  const csr = await checkCsr(req.csrPem);

  const token = await authenticateJoinToken(deps, presented);
  attempt.proven();
  if (req.clusterId && req.clusterId !== token.cluster_id) {
    throw permissionDenied(
      `this join token admits nodes into another cluster, not "${req.clusterId}"; use a token for "${req.clusterId}"`,
    );
  }
  const publicKeySha256 = createHash("sha256").update(csr.spki).digest("hex");
  // Checked before the token's uses: the retried Join of a single-use token finds the token used up.
  const existing = await openRequestFor(deps.pool, token.id, publicKeySha256);
  if (existing) return existing;
  requireUsable(token);
  const outside = requested.filter((r) => !token.allowed_roles.includes(r));
  if (outside.length > 0) {
    throw invalidArgument(
      `requested_roles ${outside.join(", ")} are not allowed by this join token (it allows: ${
        token.allowed_roles.join(", ") || "no roles"
      })`,
    );
  }
  const requestedRoles = requested.length > 0 ? requested : token.allowed_roles;
  const facts = create(NodeFactsSchema, req.facts ?? {});
  const id = randomUUID();
  const challenge = randomBytes(32);

  const row = await transaction(deps.pool, async (tx) => {
    // A concurrent Join with this token and key may have won since the check above.
    await tx.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", [
      `join:${token.id}:${publicKeySha256}`,
    ]);
    const raced = await openRequestFor(tx, token.id, publicKeySha256);
    if (raced) return raced;
    const used = await takeJoinTokenUse(tx, token.id);
    if (!used) return undefined;
    const decided = used.auto_approve;
    const inserted = await tx.query<JoinRequestRow>(
      `INSERT INTO join_requests (id, token_id, cluster_id, node_name, facts, capabilities, requested_roles,
         allowed_roles, auto_approve, csr_pem, public_key_spki, public_key_sha256, challenge, peer_address, state,
         expires_at, decided_at, decided_by_kind, decided_by_id, granted_roles, node_id, certificate_lifetime_ms)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
         now() + make_interval(secs => $16::double precision / 1000),
         CASE WHEN $9 THEN now() END, $17, $18, $19, $20, $21)
       RETURNING ${REQUEST_COLUMNS}`,
      [
        id,
        used.id,
        used.cluster_id,
        nodeName,
        Buffer.from(toBinary(NodeFactsSchema, facts)),
        capabilities,
        requestedRoles,
        used.allowed_roles,
        decided,
        req.csrPem,
        csr.spki,
        publicKeySha256,
        challenge,
        address,
        decided ? "approving" : "pending",
        deps.config.joinRequestTtlMs,
        decided ? ENROLLMENT_SERVICE.kind : null,
        decided ? ENROLLMENT_SERVICE.id : null,
        decided ? requestedRoles : [],
        decided ? newNodeId() : null,
        decided ? deps.config.nodeCertificateLifetimeMs : null,
      ],
    );
    tx.audit({
      actorId: ANONYMOUS.id,
      actorKind: ANONYMOUS.kind,
      action: "join_request.create",
      targetType: "join_request",
      targetId: id,
      clusterId: used.cluster_id,
      outcome: "success",
      details: {
        tokenId: used.id,
        address,
        nodeName,
        requestedRoles: requestedRoles.join(","),
        publicKeySha256,
      },
    });
    if (decided) {
      tx.audit({
        actorId: ENROLLMENT_SERVICE.id,
        actorKind: ENROLLMENT_SERVICE.kind,
        action: "join_request.approve",
        targetType: "join_request",
        targetId: id,
        clusterId: used.cluster_id,
        outcome: "success",
        details: { tokenId: used.id, autoApprove: "true", grantedRoles: requestedRoles.join(",") },
      });
    }
    return inserted.rows[0]!;
  });
  if (row) return row;
  // Another Join took the last use (or an admin revoked the token) since we read it: say which.
  const now = await readJoinToken(deps, token.id);
  if (now) requireUsable(now);
  throw failedPrecondition(`join token ${token.id} can no longer be used; ask an admin for a new token`);
}

/**
 * The open or approved join request of this token and key, if any: a host whose Join got no answer sends
 * it again, and must get the request it already has (and no second use of the token). Joins of one token
 * and key are serialized by an advisory lock, so two at once cannot both create one.
 */
async function openRequestFor(
  db: Pick<Tx, "query">,
  tokenId: string,
  publicKeySha256: string,
): Promise<JoinRequestRow | undefined> {
  const { rows } = await db.query<JoinRequestRow>(
    `SELECT ${REQUEST_COLUMNS} FROM join_requests
     WHERE token_id = $1 AND public_key_sha256 = $2
       AND (state IN ('approving', 'approved') OR (state = 'pending' AND expires_at > now()))
     ORDER BY seq DESC LIMIT 1`,
    [tokenId, publicKeySha256],
  );
  return rows[0];
}

const STATE_FILTERS: Partial<Record<JoinRequestState, string>> = {
  [JoinRequestState.PENDING]: "(state = 'approving' OR (state = 'pending' AND expires_at > now()))",
  [JoinRequestState.APPROVED]: "state = 'approved'",
  [JoinRequestState.REJECTED]: "state = 'rejected'",
  [JoinRequestState.EXPIRED]: "(state = 'expired' OR (state = 'pending' AND expires_at <= now()))",
};

export async function listJoinRequests(
  deps: Enrollment,
  principal: Principal,
  req: ListJoinRequestsRequest,
): Promise<{ rows: JoinRequestRow[]; nextPageToken: string }> {
  return listClusterPage<JoinRequestRow>(
    deps,
    principal,
    {
      rpc: "ListJoinRequests",
      table: "join_requests",
      columns: REQUEST_COLUMNS,
      noun: "join request",
      stateFilters: STATE_FILTERS,
    },
    req,
  );
}

/** One request an admin may see: NotFound, or PermissionDenied outside a cluster-admin's cluster. */
export async function getJoinRequest(
  deps: Enrollment,
  principal: Principal,
  id: string,
): Promise<JoinRequestRow> {
  const row = await readJoinRequest(deps, requireJoinRequestId(id));
  if (!row) throw notFound(`join request ${id} does not exist`);
  requireCluster(principal, row.cluster_id);
  return row;
}

export async function rejectJoinRequest(
  deps: Enrollment,
  principal: Principal,
  id: string,
  reason: string,
): Promise<JoinRequestRow> {
  requireJoinRequestId(id);
  if (!reason.trim()) throw invalidArgument("reason is required: it is shown to the waiting node");
  boundedText(reason, "reason", 512);
  const actor = actorOf(principal);
  return transaction(deps.pool, async (tx) => {
    const found = await tx.query<JoinRequestRow>(
      `SELECT ${REQUEST_COLUMNS} FROM join_requests WHERE id = $1 FOR UPDATE`,
      [id],
    );
    const row = found.rows[0];
    if (!row) throw notFound(`join request ${id} does not exist`);
    requireCluster(principal, row.cluster_id);
    requireUndecided(row, "rejected");
    const updated = await tx.query<JoinRequestRow>(
      `UPDATE join_requests SET state = 'rejected', decided_at = now(), decided_by_kind = $2, decided_by_id = $3,
         rejection_reason = $4
       WHERE id = $1 RETURNING ${REQUEST_COLUMNS}`,
      [id, actor.kind, actor.id, reason],
    );
    tx.audit({
      actorId: actor.id,
      actorKind: actor.kind,
      action: "join_request.reject",
      targetType: "join_request",
      targetId: id,
      clusterId: row.cluster_id,
      outcome: "success",
      details: { reason, tokenId: row.token_id },
    });
    tx.afterCommit(() => deps.events.changed(id));
    return updated.rows[0]!;
  });
}

/** Refuses deciding a request that is no longer PENDING, saying what it is instead. */
export function requireUndecided(row: JoinRequestRow, decision: "approved" | "rejected"): void {
  const state = visibleState(row);
  if (row.state === "approving") {
    throw failedPrecondition(
      `join request ${row.id} is already being approved (waiting for the CA or registry); it cannot be ${decision}`,
    );
  }
  if (state !== JoinRequestState.PENDING) {
    const shown = JoinRequestState[state].toLowerCase();
    throw failedPrecondition(`join request ${row.id} is ${shown}, not pending; it cannot be ${decision}`);
  }
}

/** Marks undecided requests past their expiry EXPIRED, with audit, and wakes their waiters. */
export async function expireJoinRequests(deps: Enrollment): Promise<number> {
  return transaction(deps.pool, async (tx) => {
    const { rows } = await tx.query<{ id: string; cluster_id: string; token_id: string }>(
      `UPDATE join_requests SET state = 'expired'
       WHERE state = 'pending' AND expires_at <= now() RETURNING id, cluster_id, token_id`,
    );
    for (const row of rows) {
      tx.audit({
        actorId: ENROLLMENT_SERVICE.id,
        actorKind: ENROLLMENT_SERVICE.kind,
        action: "join_request.expire",
        targetType: "join_request",
        targetId: row.id,
        clusterId: row.cluster_id,
        outcome: "success",
        details: { tokenId: row.token_id },
      });
      tx.afterCommit(() => deps.events.changed(row.id));
    }
    return rows.length;
  });
}
