import type { HandlerContext } from "@connectrpc/connect";
import { timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { AuditOutcome } from "@fabric/proto/fabric/common/v1/audit_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import {
  listAudit,
  verifyAudit,
  type AuditEvent,
  type AuditInput,
  type AuditVerificationResult,
} from "./audit.js";
import type { AuditCheckpoints } from "./audit-checkpoints.js";
import type { Pool } from "./database.js";
import { invalidArgument } from "./errors.js";
import { decodePageToken, encodePageToken, pageSize } from "./paging.js";
import type { ServiceName } from "./pki/principal-kinds.js";
import { callerOf, isOrgAdmin, listCluster, viewOrganization } from "./scope.js";
import { requestTimestamp } from "./timestamps.js";

/**
 * ListAudit and VerifyAudit, the same on every service (ca, enrollment, registry, router: each contract
 * has the same request and response shapes). The authorization table decides who may call them; here
 * ListAudit is scoped with the platform's scope checks: a platform-admin sees every event, a
 * cluster-admin only its cluster's, an org-admin only its organization's (services record org_id only on
 * events an organization may see). VerifyAudit walks the chain and checks the service's signed
 * checkpoints; a verification that finds everything intact is itself anchored with a new checkpoint.
 */

/** ListAuditRequest as every service's contract has it. */
export interface ListAuditQuery {
  clusterId: string;
  organizationId: string;
  actorId: string;
  actionPrefix: string;
  targetType: string;
  targetId: string;
  outcome: number;
  since?: Timestamp;
  until?: Timestamp;
  pageSize: number;
  pageToken: string;
}

/** An AuditEvent message as every service's contract has it. */
export interface AuditEventMessage {
  seq: bigint;
  id: string;
  at: Timestamp;
  actor?: { kind: PrincipalKind; id: string };
  service: string;
  action: string;
  targetType: string;
  targetId: string;
  clusterId: string;
  organizationId: string;
  outcome: number;
  details: Record<string, string>;
  prevHash: string;
  hash: string;
}

export interface AuditHandlers {
  listAudit(
    req: ListAuditQuery,
    ctx: HandlerContext,
  ): Promise<{ events: AuditEventMessage[]; nextPageToken: string }>;
  verifyAudit(req: { fromSeq: bigint; toSeq: bigint }): Promise<AuditVerificationResult>;
}

const OUTCOMES: Record<AuditInput["outcome"], AuditOutcome> = {
  success: AuditOutcome.SUCCESS,
  refused: AuditOutcome.DENIED,
  failed: AuditOutcome.FAILED,
};

const KINDS: Record<string, PrincipalKind> = {
  node: PrincipalKind.NODE,
  service: PrincipalKind.SERVICE,
  user: PrincipalKind.USER,
  admin: PrincipalKind.ADMIN,
};

function toMessage(service: ServiceName, e: AuditEvent): AuditEventMessage {
  return {
    seq: e.seq,
    id: e.id,
    at: timestampFromDate(e.at),
    ...(e.actorId ? { actor: { kind: KINDS[e.actorKind] ?? PrincipalKind.UNSPECIFIED, id: e.actorId } } : {}),
    service,
    action: e.action,
    targetType: e.targetType,
    targetId: e.targetId,
    clusterId: e.clusterId,
    organizationId: e.orgId,
    outcome: OUTCOMES[e.outcome],
    details: e.details,
    prevHash: e.prevHash.toString("hex"),
    hash: e.hash.toString("hex"),
  };
}

export function auditHandlers(
  service: ServiceName,
  pool: Pool,
  checkpoints: AuditCheckpoints,
): AuditHandlers {
  return {
    async listAudit(req, ctx) {
      const caller = callerOf(ctx);
      const cluster = isOrgAdmin(caller) ? req.clusterId : listCluster(caller, req.clusterId);
      const org = isOrgAdmin(caller) ? viewOrganization(caller, req.organizationId) : req.organizationId;
      let outcome: AuditInput["outcome"] | undefined;
      if (req.outcome) {
        outcome = (Object.keys(OUTCOMES) as AuditInput["outcome"][]).find((o) => OUTCOMES[o] === req.outcome);
        if (!outcome) throw invalidArgument("outcome must be SUCCESS, DENIED or FAILED");
      }
      const since = req.since && requestTimestamp(req.since, "since");
      const until = req.until && requestTimestamp(req.until, "until");
      const scope = `ListAudit|${JSON.stringify([cluster, org, req.actorId, req.actionPrefix, req.targetType, req.targetId, outcome, since, until])}`;
      const after = decodePageToken(req.pageToken, scope);
      if (after && (after.length !== 1 || !/^[1-9][0-9]{0,18}$/.test(String(after[0])))) {
        throw invalidArgument(
          "page_token is not a token this server issued; start again with an empty page_token",
        );
      }
      const size = pageSize(req.pageSize);
      const events = await listAudit(
        pool,
        {
          clusterId: cluster,
          orgId: org,
          actorId: req.actorId,
          actionPrefix: req.actionPrefix,
          targetType: req.targetType,
          targetId: req.targetId,
          ...(outcome ? { outcome } : {}),
          ...(since ? { since } : {}),
          ...(until ? { until } : {}),
        },
        { limit: size + 1, ...(after ? { beforeSeq: BigInt(after[0]!) } : {}) },
      );
      const page = events.slice(0, size);
      const last = page.at(-1);
      return {
        events: page.map((e) => toMessage(service, e)),
        nextPageToken: events.length > size && last ? encodePageToken([last.seq.toString()], scope) : "",
      };
    },

    async verifyAudit(req) {
      const result = await verifyAudit(
        pool,
        { fromSeq: req.fromSeq, toSeq: req.toSeq },
        checkpoints.anchors(),
      );
      // What was just found intact is anchored at once, rather than at the next checkpoint.
      if (result.ok) await checkpoints.checkpoint();
      return result;
    },
  };
}
