import { create, fromBinary } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  actorOf,
  inspectCertificate,
  invalidArgument,
  notFound,
  requireCluster,
  splitCertificates,
  transaction,
  unavailable,
  type Principal,
  type Tx,
} from "@fabric/platform";
import { CertificateStatus, RevocationReason, SignRequestSchema } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { NodeFactsSchema, PrincipalKind, PrincipalSchema } from "@fabric/proto/fabric/common/v1/common_pb.js";
import type { ApproveJoinRequestRequest } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegisterNodeRequestSchema } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { ENROLLMENT_SERVICE, principalKindOf, type Enrollment } from "./context.js";
import {
  REQUEST_COLUMNS,
  newNodeId,
  readJoinRequest,
  requireUndecided,
  type JoinRequestRow,
} from "./join-requests.js";
import { requireAttachableNode } from "./registry-scope.js";
import { recordEnrollment } from "./principal-enrollments.js";
import { durationField, optionalNodeId, requireJoinRequestId, roleList } from "./validation.js";

/**
 * Approval, crash-safe and idempotent. The decision (node id, roles, lifetime, decider) is committed first
 * (state `approving`); the certificate is signed while holding the request's row lock and stored in the
 * same transaction, so concurrent approvers never sign twice; then the registry creates the node
 * (RegisterNode is idempotent per join request id) and the request becomes APPROVED. A crash or an
 * unreachable CA/registry at any step leaves an `approving` row that approving again, or the background
 * reconciler, carries on from where it stopped.
 */

export const MAX_CERTIFICATE_LIFETIME_MS = 90 * 86_400_000;

/** Refusals that will not change by retrying: the decision is withdrawn and the admin told why. */
const PERMANENT = new Set([
  Code.InvalidArgument,
  Code.FailedPrecondition,
  Code.NotFound,
  Code.AlreadyExists,
  Code.PermissionDenied,
  Code.OutOfRange,
]);

/** What the CA records as the authorization of the certificates issued for a join request. */
const authorizationRefOf = (row: JoinRequestRow) => `join-request/${row.id}`;

export async function approveJoinRequest(
  deps: Enrollment,
  principal: Principal,
  req: ApproveJoinRequestRequest,
): Promise<JoinRequestRow> {
  const id = requireJoinRequestId(req.joinRequestId);
  const attachTo = optionalNodeId(req.nodeId);
  const asked = roleList(req.grantedRoles, "granted_roles");
  const lifetimeAsked = durationField(req.certificateLifetime, "certificate_lifetime");
  if (lifetimeAsked > MAX_CERTIFICATE_LIFETIME_MS)
    throw invalidArgument("certificate_lifetime may be at most 90 days");
  if (lifetimeAsked > 0 && lifetimeAsked < 60_000)
    throw invalidArgument("certificate_lifetime must be at least 1 minute");
  const lifetimeMs = lifetimeAsked || deps.config.nodeCertificateLifetimeMs;

  const current = await readJoinRequest(deps, id);
  if (!current) throw notFound(`join request ${id} does not exist`);
  requireCluster(principal, current.cluster_id);
  if (current.state === "approved") return current;
  if (current.state !== "approving") {
    requireUndecided(current, "approved");
    const grantable = current.requested_roles.filter((r) => current.allowed_roles.includes(r));
    const outside = asked.filter((r) => !grantable.includes(r));
    if (outside.length > 0) {
      throw invalidArgument(
        `granted_roles ${outside.join(", ")} were not requested by the node or are not allowed by its token (grantable: ${
          grantable.join(", ") || "none"
        })`,
      );
    }
    if (attachTo) await requireAttachableNode(deps, principal, attachTo, current.cluster_id);
    await decide(deps, principal, current, {
      grantedRoles: asked.length > 0 ? asked : grantable,
      nodeId: attachTo || newNodeId(),
      lifetimeMs,
    });
  }
  return completeApproval(deps, id, "wait");
}

/** Records the admin's decision (state `approving`) unless someone decided first. */
async function decide(
  deps: Enrollment,
  principal: Principal,
  row: JoinRequestRow,
  decision: { grantedRoles: string[]; nodeId: string; lifetimeMs: number },
): Promise<void> {
  const actor = actorOf(principal);
  await transaction(deps.pool, async (tx) => {
    const locked = await tx.query<JoinRequestRow>(
      `SELECT ${REQUEST_COLUMNS} FROM join_requests WHERE id = $1 FOR UPDATE`,
      [row.id],
    );
    const now = locked.rows[0]!;
    // A concurrent approval got here first: carry on with its decision.
    if (now.state === "approving" || now.state === "approved") return;
    requireUndecided(now, "approved");
    await tx.query(
      `UPDATE join_requests SET state = 'approving', decided_at = now(), decided_by_kind = $2, decided_by_id = $3,
         granted_roles = $4, node_id = $5, certificate_lifetime_ms = $6
       WHERE id = $1`,
      [row.id, actor.kind, actor.id, decision.grantedRoles, decision.nodeId, decision.lifetimeMs],
    );
    tx.audit({
      actorId: actor.id,
      actorKind: actor.kind,
      action: "join_request.approve",
      targetType: "join_request",
      targetId: row.id,
      clusterId: row.cluster_id,
      outcome: "success",
      details: {
        tokenId: row.token_id,
        nodeId: decision.nodeId,
        grantedRoles: decision.grantedRoles.join(","),
        certificateLifetimeMs: String(decision.lifetimeMs),
      },
    });
  });
}

/**
 * Drives an `approving` request to APPROVED: certificate, then registry, then the final state, and
 * returns the row as it ends up. `wait` queues behind another worker holding the request; `skip` (the
 * reconciler) throws SkippedError instead.
 */
export async function completeApproval(
  deps: Enrollment,
  id: string,
  lock: "wait" | "skip",
): Promise<JoinRequestRow> {
  const row = await ensureCertificate(deps, id, lock);
  if (row.state !== "approving") return row;
  await registerNode(deps, row);
  return finish(deps, row);
}

type SignOutcome =
  { kind: "ready"; row: JoinRequestRow } | { kind: "retry" | "refused"; error: ConnectError };

async function ensureCertificate(
  deps: Enrollment,
  id: string,
  lock: "wait" | "skip",
): Promise<JoinRequestRow> {
  const outcome = await transaction(deps.pool, async (tx): Promise<SignOutcome | undefined> => {
    const found = await tx.query<JoinRequestRow>(
      `SELECT ${REQUEST_COLUMNS} FROM join_requests WHERE id = $1 FOR UPDATE${lock === "skip" ? " SKIP LOCKED" : ""}`,
      [id],
    );
    const row = found.rows[0];
    if (!row) return undefined;
    if (row.state !== "approving" || row.certificate_serial) return { kind: "ready", row };
    let signed;
    try {
      signed = await deps.ca.sign(
        create(SignRequestSchema, {
          csrPem: row.csr_pem,
          principalKind: PrincipalKind.NODE,
          principalId: row.node_id!,
          clusterId: row.cluster_id,
          grants: row.granted_roles,
          requestedLifetime: durationFromMs(Number(row.certificate_lifetime_ms)),
          authorizationRef: authorizationRefOf(row),
        }),
      );
    } catch (err) {
      const error = ConnectError.from(err);
      if (!PERMANENT.has(error.code)) return { kind: "retry", error };
      await withdrawDecision(deps, tx, row, `the CA refused to sign: ${error.rawMessage}`);
      return { kind: "refused", error };
    }
    const updated = await tx.query<JoinRequestRow>(
      `UPDATE join_requests SET certificate_serial = $2, certificate_pem = $3, chain_pem = $4, ca_bundle_pem = $5,
         certificate_not_after = $6
       WHERE id = $1 RETURNING ${REQUEST_COLUMNS}`,
      [
        id,
        signed.serial,
        signed.certificatePem,
        signed.chainPem.flatMap(splitCertificates),
        signed.caBundlePem,
        signed.notAfter ? timestampDate(signed.notAfter) : inspectCertificate(signed.certificatePem).notAfter,
      ],
    );
    const abandoned = await abandonEarlierCertificates(deps, tx, updated.rows[0]!);
    tx.audit({
      actorId: ENROLLMENT_SERVICE.id,
      actorKind: ENROLLMENT_SERVICE.kind,
      action: "join_request.certificate_issued",
      targetType: "join_request",
      targetId: id,
      clusterId: row.cluster_id,
      outcome: "success",
      details: {
        nodeId: row.node_id!,
        serial: signed.serial,
        ...(abandoned.length > 0 ? { abandonedSerials: abandoned.join(",") } : {}),
      },
    });
    return { kind: "ready", row: updated.rows[0]! };
  });
  if (!outcome) {
    if (lock === "skip") throw new SkippedError(id);
    throw notFound(`join request ${id} does not exist`);
  }
  switch (outcome.kind) {
    case "ready":
      return outcome.row;
    case "retry":
      throw unavailable(
        `the CA could not sign the certificate now (${outcome.error.rawMessage}); the approval is recorded and completes automatically, or approve again`,
      );
    case "refused":
      throw new ConnectError(
        `the CA refused the certificate (${outcome.error.rawMessage}); join request ${id} is pending again`,
        outcome.error.code,
      );
  }
}

/**
 * A Sign whose answer was lost (the CA, this service or a connection died after the CA committed) left a
 * certificate nobody received, and the retry issued another. Such an orphan is an active certificate the
 * CA issued for this very join request (its authorization_ref) in this cluster, other than the one kept:
 * it is queued for revocation with the request, leaving exactly one usable identity per approval. Nothing
 * else is ever touched: an attached node's certificates in its other clusters, and its renewals, were
 * issued on other authorizations.
 */
async function abandonEarlierCertificates(deps: Enrollment, tx: Tx, row: JoinRequestRow): Promise<string[]> {
  const authorizationRef = authorizationRefOf(row);
  const orphans: string[] = [];
  let pageToken = "";
  do {
    const page = await deps.ca.listCertificates({
      principalKind: PrincipalKind.NODE,
      principalId: row.node_id!,
      clusterId: row.cluster_id,
      status: CertificateStatus.ACTIVE,
      pageSize: 1_000,
      pageToken,
    });
    for (const c of page.certificates) {
      const ours = c.authorizationRef === authorizationRef && c.clusterId === row.cluster_id;
      if (ours && c.serial !== row.certificate_serial) orphans.push(c.serial);
    }
    pageToken = page.nextPageToken;
  } while (pageToken);
  if (orphans.length === 0) return orphans;
  await tx.query(
    `INSERT INTO abandoned_certificates (serial, join_request_id, reason)
     SELECT serial, $2, $3 FROM unnest($1::text[]) AS serial ON CONFLICT (serial) DO NOTHING`,
    [orphans, row.id, "issued for a Sign call whose answer was lost; superseded by a retry"],
  );
  // Beside the call: the reconciler retries whatever this pass does not revoke.
  tx.afterCommit(
    () =>
      void revokeAbandonedCertificates(deps).catch((err: unknown) =>
        deps.logger.warn(
          { joinRequestId: row.id, err: (err as Error).message },
          "abandoned certificates not revoked yet; the reconciler retries",
        ),
      ),
  );
  return orphans;
}

/** Thrown to the reconciler when another worker holds the request. */
export class SkippedError extends Error {
  constructor(id: string) {
    super(`join request ${id} is being completed elsewhere`);
  }
}

async function registerNode(deps: Enrollment, row: JoinRequestRow): Promise<void> {
  try {
    await deps.registry.registerNode(
      create(RegisterNodeRequestSchema, {
        nodeId: row.node_id!,
        nodeName: row.node_name,
        clusterId: row.cluster_id,
        facts: fromBinary(NodeFactsSchema, row.facts),
        capabilities: row.capabilities,
        grantedRoles: row.granted_roles,
        certificateSerial: row.certificate_serial!,
        certificateNotAfter: timestampFromDate(row.certificate_not_after!),
        joinRequestId: row.id,
        approvedBy: create(PrincipalSchema, {
          kind: principalKindOf(row.decided_by_kind!),
          id: row.decided_by_id!,
        }),
      }),
    );
  } catch (err) {
    const error = ConnectError.from(err);
    if (!PERMANENT.has(error.code)) {
      throw unavailable(
        `the certificate is issued but the registry could not record the node now (${error.rawMessage}); the approval completes automatically, or approve again`,
      );
    }
    const withdrawn = await transaction(deps.pool, async (tx) => {
      const locked = await tx.query<JoinRequestRow>(
        `SELECT ${REQUEST_COLUMNS} FROM join_requests WHERE id = $1 FOR UPDATE`,
        [row.id],
      );
      const now = locked.rows[0]!;
      if (now.state !== "approving" || now.certificate_serial !== row.certificate_serial) return false;
      await tx.query(
        `INSERT INTO abandoned_certificates (serial, join_request_id, reason) VALUES ($1, $2, $3)
         ON CONFLICT (serial) DO NOTHING`,
        [row.certificate_serial, row.id, `registry refused the node: ${error.rawMessage}`],
      );
      await withdrawDecision(deps, tx, now, `the registry refused the node: ${error.rawMessage}`);
      return true;
    });
    if (withdrawn) await revokeAbandonedCertificates(deps);
    throw new ConnectError(
      `the registry refused the node (${error.rawMessage}); join request ${row.id} is pending again and the certificate issued for it is revoked`,
      error.code,
    );
  }
}

/** Takes back a decision the CA or registry refused: the request is PENDING again for the admin. */
async function withdrawDecision(
  deps: Enrollment,
  tx: Tx,
  row: JoinRequestRow,
  reason: string,
): Promise<void> {
  await tx.query(
    `UPDATE join_requests SET state = 'pending', decided_at = NULL, decided_by_kind = NULL, decided_by_id = NULL,
       granted_roles = '{}', node_id = NULL, certificate_lifetime_ms = NULL, certificate_serial = NULL,
       certificate_pem = NULL, chain_pem = NULL, ca_bundle_pem = NULL, certificate_not_after = NULL
     WHERE id = $1`,
    [row.id],
  );
  tx.audit({
    actorId: row.decided_by_id ?? ENROLLMENT_SERVICE.id,
    actorKind: row.decided_by_kind ?? ENROLLMENT_SERVICE.kind,
    action: "join_request.approve",
    targetType: "join_request",
    targetId: row.id,
    clusterId: row.cluster_id,
    outcome: "failed",
    details: { reason, nodeId: row.node_id ?? "", serial: row.certificate_serial ?? "" },
  });
  tx.afterCommit(() => deps.events.changed(row.id));
}

async function finish(deps: Enrollment, row: JoinRequestRow): Promise<JoinRequestRow> {
  const done = await transaction(deps.pool, async (tx) => {
    const updated = await tx.query<JoinRequestRow>(
      `UPDATE join_requests SET state = 'approved', registered_at = now(),
         expires_at = now() + make_interval(secs => $2::double precision / 1000)
       WHERE id = $1 AND state = 'approving' RETURNING ${REQUEST_COLUMNS}`,
      [row.id, deps.config.joinRequestTtlMs],
    );
    const approved = updated.rows[0];
    if (!approved) return undefined;
    const facts = inspectCertificate(approved.certificate_pem!);
    await recordEnrollment(tx, {
      spiffeId: facts.spiffeId!,
      kind: "node",
      principalId: approved.node_id!,
      lifetimeMs: Number(approved.certificate_lifetime_ms),
    });
    tx.audit({
      actorId: ENROLLMENT_SERVICE.id,
      actorKind: ENROLLMENT_SERVICE.kind,
      action: "join_request.complete",
      targetType: "join_request",
      targetId: row.id,
      clusterId: row.cluster_id,
      outcome: "success",
      details: { nodeId: approved.node_id!, serial: approved.certificate_serial! },
    });
    tx.afterCommit(() => deps.events.changed(row.id));
    return approved;
  });
  return done ?? (await readJoinRequest(deps, row.id))!;
}

/** Revokes at the CA the certificates of approvals that did not go through, then forgets them. */
export async function revokeAbandonedCertificates(deps: Enrollment): Promise<void> {
  const { rows } = await deps.pool.query<{ serial: string; join_request_id: string; reason: string }>(
    "SELECT serial, join_request_id, reason FROM abandoned_certificates ORDER BY created_at LIMIT 100",
  );
  for (const row of rows) {
    try {
      await deps.ca.revoke({
        target: { case: "serial", value: row.serial },
        reason: RevocationReason.CESSATION_OF_OPERATION,
        comment: `join request ${row.join_request_id} was not completed: ${row.reason}`.slice(0, 512),
      });
    } catch (err) {
      deps.logger.warn(
        { serial: row.serial, err: (err as Error).message },
        "could not revoke an abandoned certificate",
      );
      continue;
    }
    await transaction(deps.pool, async (tx) => {
      await tx.query("DELETE FROM abandoned_certificates WHERE serial = $1", [row.serial]);
      tx.audit({
        actorId: ENROLLMENT_SERVICE.id,
        actorKind: ENROLLMENT_SERVICE.kind,
        action: "certificate.revoke_abandoned",
        targetType: "certificate",
        targetId: row.serial,
        outcome: "success",
        details: { joinRequestId: row.join_request_id },
      });
    });
  }
}

/** One pass of the reconciler: completes interrupted approvals and revokes abandoned certificates. */
export async function reconcileApprovals(deps: Enrollment): Promise<void> {
  const { rows } = await deps.pool.query<{ id: string }>(
    "SELECT id FROM join_requests WHERE state = 'approving' ORDER BY decided_at LIMIT 100",
  );
  for (const { id } of rows) {
    try {
      await completeApproval(deps, id, "skip");
    } catch (err) {
      if (err instanceof SkippedError) continue;
      deps.logger.warn(
        { joinRequestId: id, err: (err as Error).message },
        "approval not completed yet; will retry",
      );
    }
  }
  await revokeAbandonedCertificates(deps);
}
