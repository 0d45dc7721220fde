import { createPublicKey } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { failedPrecondition, notFound, recordAudit, unauthenticated } from "@fabric/platform";
import {
  JoinRequestState,
  WaitForApprovalResponseSchema,
  type WaitForApprovalRequest,
  type WaitForApprovalResponse,
} from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { ANONYMOUS, auditRefusal, type Enrollment } from "./context.js";
import { expireJoinRequests, readJoinRequest, visibleState, type JoinRequestRow } from "./join-requests.js";
import { verifyWaitForApproval } from "./protocol.js";
import { requireJoinRequestId } from "./validation.js";

const FINAL = new Set([JoinRequestState.APPROVED, JoinRequestState.REJECTED, JoinRequestState.EXPIRED]);

/**
 * The requester proves it holds the CSR's key by signing the challenge Join returned; then the stream
 * sends the current state and every change until a final one. Decisions in this process wake it at once
 * (after commit); the poll picks up decisions of other replicas; a timer fires at the expiry.
 */
export async function* waitForApproval(
  deps: Enrollment,
  req: WaitForApprovalRequest,
  address: string,
  signal: AbortSignal,
): AsyncGenerator<WaitForApprovalResponse> {
  const first = await auditRefusal(
    deps,
    {
      actorId: ANONYMOUS.id,
      actorKind: ANONYMOUS.kind,
      action: "join_request.wait",
      targetType: "join_request",
      targetId: req.joinRequestId.slice(0, 64),
      details: { address },
    },
    () => admit(deps, req, address),
  );
  const id = first.id;
  let row: JoinRequestRow = first;
  let sent: JoinRequestState | undefined;
  for (;;) {
    const state = visibleState(row);
    if (row.state === "pending" && state === JoinRequestState.EXPIRED) await expireJoinRequests(deps);
    if (state !== sent) {
      yield responseFor(row, state);
      sent = state;
    }
    if (FINAL.has(state)) return;
    const untilExpiry = row.expires_at.getTime() - Date.now() + 10;
    await deps.events.next(id, Math.min(deps.config.waitPollIntervalMs, Math.max(untilExpiry, 0)), signal);
    if (signal.aborted) return;
    row = (await readJoinRequest(deps, id))!;
  }
}

async function admit(
  deps: Enrollment,
  req: WaitForApprovalRequest,
  address: string,
): Promise<JoinRequestRow> {
  const attempt = deps.limits.admitAddress("WaitForApproval", address);
  const id = requireJoinRequestId(req.joinRequestId);
  const row = await readJoinRequest(deps, id);
  if (!row) throw notFound(`join request ${id} does not exist; join again with a token`);
  const key = createPublicKey({ key: row.public_key_spki, format: "der", type: "spki" });
  if (!verifyWaitForApproval(key, id, row.challenge, req.signature)) {
    throw deps.limits.credentialFailed(
      "WaitForApproval",
      "join-request",
      id,
      unauthenticated(
        "signature does not prove possession of this join request's key: sign 'fabric-wait-for-approval:<id>:' + challenge with the CSR's key (ECDSA P-256, SHA-256, DER)",
      ),
    );
  }
  attempt.proven();
  if (row.state === "approved" && row.expires_at <= new Date()) {
    throw failedPrecondition(
      `join request ${id} was approved but its certificate could no longer be collected after ${row.expires_at.toISOString()}; join again with a new token`,
    );
  }
  await recordAudit(deps.pool, {
    actorId: ANONYMOUS.id,
    actorKind: ANONYMOUS.kind,
    action: "join_request.wait",
    targetType: "join_request",
    targetId: id,
    clusterId: row.cluster_id,
    outcome: "success",
    details: { address },
  });
  return row;
}

function responseFor(row: JoinRequestRow, state: JoinRequestState): WaitForApprovalResponse {
  const base = { state, expiresAt: timestampFromDate(row.expires_at) };
  switch (state) {
    case JoinRequestState.APPROVED:
      return create(WaitForApprovalResponseSchema, {
        ...base,
        certificatePem: row.certificate_pem!,
        chainPem: row.chain_pem ?? [],
        caBundlePem: row.ca_bundle_pem!,
        nodeId: row.node_id!,
        clusterId: row.cluster_id,
        grantedRoles: row.granted_roles,
        notAfter: timestampFromDate(row.certificate_not_after!),
      });
    case JoinRequestState.REJECTED:
      return create(WaitForApprovalResponseSchema, { ...base, rejectionReason: row.rejection_reason });
    default:
      return create(WaitForApprovalResponseSchema, base);
  }
}
