import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { actorOf, callerOf, remoteAddressFrom, type AuditInput, type Principal } from "@fabric/platform";
import {
  ApproveJoinRequestResponseSchema,
  BootstrapDeveloperResponseSchema,
  CreateJoinTokenResponseSchema,
  DeveloperSettingsSchema,
  EnrollmentServiceJoinResponseSchema,
  GetJoinRequestResponseSchema,
  IssueDeveloperPinResponseSchema,
  ListJoinRequestsResponseSchema,
  ListJoinTokensResponseSchema,
  RejectJoinRequestResponseSchema,
  RenewResponseSchema,
  RevokeJoinTokenResponseSchema,
  type EnrollmentService,
} from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { approveJoinRequest, completeApproval } from "./approvals.js";
import { ANONYMOUS, auditRefusal, type Enrollment } from "./context.js";
import { bootstrapDeveloper, issueDeveloperPin } from "./developer-pins.js";
import {
  getJoinRequest,
  join,
  joinRequestMessage,
  listJoinRequests,
  rejectJoinRequest,
  visibleState,
} from "./join-requests.js";
import { createJoinToken, joinTokenMessage, listJoinTokens, revokeJoinToken } from "./join-tokens.js";
import { renew } from "./renewal.js";
import { waitForApproval } from "./wait-for-approval.js";

/** The public endpoints handed to developers (DeveloperSettings). */
export interface PublicEndpoints {
  ca: string;
  enrollment: string;
  registry: string;
  router: string;
}

/** The audit fields of an authenticated caller's attempt. */
function attemptBy(principal: Principal, action: string, target: Partial<AuditInput> = {}) {
  const actor = actorOf(principal);
  return { actorId: actor.id, actorKind: actor.kind, action, ...target };
}

/** The public id of a join token or token id, for audit; never any part of a secret. */
function tokenIdOf(value: string): string {
  return /^([0-9a-f]{16})(?:\.|$)/.exec(value)?.[1] ?? "(malformed)";
}

export function enrollmentHandlers(
  deps: Enrollment,
  endpoints: () => PublicEndpoints,
): Partial<ServiceImpl<typeof EnrollmentService>> {
  return {
    async createJoinToken(req, ctx) {
      const principal = callerOf(ctx);
      const attempt = attemptBy(principal, "join_token.create", {
        targetType: "cluster",
        targetId: req.clusterId.slice(0, 64),
        clusterId: req.clusterId.slice(0, 64),
      });
      const { token, row } = await auditRefusal(deps, attempt, () => createJoinToken(deps, principal, req));
      return create(CreateJoinTokenResponseSchema, { token, joinToken: joinTokenMessage(row) });
    },

    async listJoinTokens(req, ctx) {
      const principal = callerOf(ctx);
      const attempt = attemptBy(principal, "join_token.list", { clusterId: req.clusterId.slice(0, 64) });
      const page = await auditRefusal(deps, attempt, () => listJoinTokens(deps, principal, req));
      return create(ListJoinTokensResponseSchema, {
        joinTokens: page.rows.map(joinTokenMessage),
        nextPageToken: page.nextPageToken,
      });
    },

    async revokeJoinToken(req, ctx) {
      const principal = callerOf(ctx);
      const attempt = attemptBy(principal, "join_token.revoke", {
        targetType: "join_token",
        targetId: tokenIdOf(req.tokenId),
      });
      const row = await auditRefusal(deps, attempt, () => revokeJoinToken(deps, principal, req.tokenId));
      return create(RevokeJoinTokenResponseSchema, { joinToken: joinTokenMessage(row) });
    },

    async join(req, ctx) {
      const address = remoteAddressFrom(ctx.values);
      const attempt = {
        actorId: ANONYMOUS.id,
        actorKind: ANONYMOUS.kind,
        action: "join_request.create",
        targetType: "join_token",
        targetId: tokenIdOf(req.token),
        details: { address },
      };
      let row = await auditRefusal(deps, attempt, () => join(deps, req, address));
      if (row.state === "approving") {
        // Auto-approval: finish now if the CA and registry answer; otherwise the reconciler will, and the
        // node learns of it through WaitForApproval.
        row = await completeApproval(deps, row.id, "wait").catch((err: unknown) => {
          deps.logger.warn(
            { joinRequestId: row.id, err: (err as Error).message },
            "auto-approval not completed yet",
          );
          return row;
        });
      }
      return create(EnrollmentServiceJoinResponseSchema, {
        joinRequestId: row.id,
        state: visibleState(row),
        challenge: row.challenge,
        expiresAt: timestampFromDate(row.expires_at),
      });
    },

    waitForApproval(req, ctx) {
      return waitForApproval(deps, req, remoteAddressFrom(ctx.values), ctx.signal);
    },

    async listJoinRequests(req, ctx) {
      const principal = callerOf(ctx);
      const attempt = attemptBy(principal, "join_request.list", { clusterId: req.clusterId.slice(0, 64) });
      const page = await auditRefusal(deps, attempt, () => listJoinRequests(deps, principal, req));
      return create(ListJoinRequestsResponseSchema, {
        joinRequests: page.rows.map(joinRequestMessage),
        nextPageToken: page.nextPageToken,
      });
    },

    async getJoinRequest(req, ctx) {
      const principal = callerOf(ctx);
      const attempt = attemptBy(principal, "join_request.get", {
        targetType: "join_request",
        targetId: req.joinRequestId.slice(0, 64),
      });
      const row = await auditRefusal(deps, attempt, () => getJoinRequest(deps, principal, req.joinRequestId));
      return create(GetJoinRequestResponseSchema, { joinRequest: joinRequestMessage(row) });
    },

    async approveJoinRequest(req, ctx) {
      const principal = callerOf(ctx);
      const attempt = attemptBy(principal, "join_request.approve", {
        targetType: "join_request",
        targetId: req.joinRequestId.slice(0, 64),
      });
      const row = await auditRefusal(deps, attempt, () => approveJoinRequest(deps, principal, req));
      return create(ApproveJoinRequestResponseSchema, { joinRequest: joinRequestMessage(row) });
    },

    async rejectJoinRequest(req, ctx) {
      const principal = callerOf(ctx);
      const attempt = attemptBy(principal, "join_request.reject", {
        targetType: "join_request",
        targetId: req.joinRequestId.slice(0, 64),
      });
      const row = await auditRefusal(deps, attempt, () =>
        rejectJoinRequest(deps, principal, req.joinRequestId, req.reason),
      );
      return create(RejectJoinRequestResponseSchema, { joinRequest: joinRequestMessage(row) });
    },

    async issueDeveloperPin(req, ctx) {
      const principal = callerOf(ctx);
      const attempt = attemptBy(principal, "developer_pin.issue", {
        targetType: "developer",
        targetId: req.developerId.slice(0, 64),
        orgId: req.organizationId.slice(0, 64),
      });
      const { pin, expiresAt } = await auditRefusal(deps, attempt, () =>
        issueDeveloperPin(deps, principal, req),
      );
      return create(IssueDeveloperPinResponseSchema, { pin, expiresAt: timestampFromDate(expiresAt) });
    },

    async bootstrapDeveloper(req, ctx) {
      const address = remoteAddressFrom(ctx.values);
      const attempt = {
        actorId: ANONYMOUS.id,
        actorKind: ANONYMOUS.kind,
        action: "developer.bootstrap",
        targetType: "developer",
        targetId: req.developerId.slice(0, 64),
        details: { address },
      };
      const result = await auditRefusal(deps, attempt, () => bootstrapDeveloper(deps, req, address));
      const urls = endpoints();
      return create(BootstrapDeveloperResponseSchema, {
        certificatePem: result.certificatePem,
        chainPem: result.chainPem,
        caBundlePem: result.caBundlePem,
        notAfter: timestampFromDate(result.notAfter),
        caBundleMac: result.mac,
        settings: create(DeveloperSettingsSchema, {
          caEndpoint: urls.ca,
          enrollmentEndpoint: urls.enrollment,
          registryEndpoint: urls.registry,
          routerEndpoint: urls.router,
          trustDomain: deps.config.trustDomain,
          defaultClusterId: result.defaultClusterId,
          organizationId: result.organizationId,
        }),
      });
    },

    async renew(req, ctx) {
      const principal = callerOf(ctx);
      const attempt = attemptBy(principal, "identity.renew", {
        targetType: principal.kind,
        targetId: principal.id,
        details: { serial: principal.serialHex },
      });
      const renewed = await auditRefusal(deps, attempt, () => renew(deps, principal, req));
      return create(RenewResponseSchema, {
        certificatePem: renewed.certificatePem,
        chainPem: renewed.chainPem,
        caBundlePem: renewed.caBundlePem,
        serial: renewed.serial,
        notBefore: timestampFromDate(renewed.notBefore),
        notAfter: timestampFromDate(renewed.notAfter),
      });
    },
  };
}
