import { Code, ConnectError } from "@connectrpc/connect";
import {
  callerOf,
  failedPrecondition,
  invalidArgument,
  listCluster,
  notFound,
  pageOf,
  recordAudit,
  requireCluster,
  sortByPosition,
  unavailable,
} from "@fabric/platform";
import { RevocationReason } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import type { Membership, Node } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import { NodeHealth } from "@fabric/proto/fabric/registry/v1/session_pb.js";
import type { Handlers, Registry } from "./context.js";
import { membershipHostKey } from "./entities.js";
import { mutate, written, type Mutation } from "./mutations.js";
import type { Sql } from "./sql.js";
import { principalId, required, text } from "./validation.js";

/**
 * A node as seen from one cluster: that membership only, and the host as the node reported it through
 * that membership (facts, capabilities, heartbeat). "" = platform-wide: every membership, and the host as
 * reported in the node's home cluster. Memberships are read from their own entities, which reports
 * through other clusters than the home one keep current without touching the node.
 */
export function nodeView(r: Registry, node: Node, cluster: string): Node {
  const memberships = node.memberships
    .filter((m) => !cluster || m.clusterId === cluster)
    .map((m) => r.model.get("membership", m.id) ?? m);
  if (!cluster) return { ...node, memberships };
  const host = r.model.get("membership_host", membershipHostKey(node.id, cluster));
  return {
    ...node,
    facts: host?.facts,
    capabilities: host?.capabilities ?? [],
    online: host?.online ?? false,
    health: host?.health ?? NodeHealth.UNSPECIFIED,
    lastHeartbeat: host?.lastHeartbeat,
    lastHeartbeatAt: host?.lastHeartbeatAt,
    memberships,
  };
}

// Reasons Fabric revocation cannot use: it is final, never a hold.
const REFUSED_REASONS = new Set([RevocationReason.CERTIFICATE_HOLD, RevocationReason.REMOVE_FROM_CRL]);

/** Nodes and their memberships: reads for admins, membership state changes, and revocation. */
export function nodeHandlers(
  r: Registry,
): Handlers<
  "getNode" | "listNodes" | "revokeNode" | "listMemberships" | "disableMembership" | "enableMembership"
> {
  return {
    getNode(req, ctx) {
      const caller = callerOf(ctx);
      // The enrollment service (the only one the table admits) sees every membership: it checks them all
      // against the scope of the admin whose approval it carries out.
      const cluster = caller.kind === "service" ? "" : listCluster(caller, "");
      const node = r.model.get("node", req.nodeId);
      // A cluster-admin learns nothing about nodes outside its cluster, not even that they exist.
      if (!node || (cluster && !node.memberships.some((m) => m.clusterId === cluster))) {
        throw notFound(`node "${req.nodeId}" does not exist${cluster ? ` in cluster "${cluster}"` : ""}`);
      }
      return { node: nodeView(r, node, cluster) };
    },

    listNodes(req, ctx) {
      const cluster = listCluster(callerOf(ctx), req.clusterId);
      const assignments = r.model.values("role_assignment");
      const holds = (nodeId: string, test: (a: (typeof assignments)[number]) => boolean) =>
        assignments.some((a) => a.nodeId === nodeId && (!cluster || a.clusterId === cluster) && test(a));
      const nodes = r.model.values("node").filter(
        (n) =>
          (!cluster || n.memberships.some((m) => m.clusterId === cluster)) &&
          (!req.state || n.state === req.state) &&
          (!req.role || holds(n.id, (a) => a.role === req.role)) &&
          (!req.organizationId || holds(n.id, (a) => a.organizationId === req.organizationId)) &&
          // A group is one cluster's: a cluster-admin's filter matches only memberships of its own.
          (!req.nodeGroupId ||
            n.memberships.some(
              (m) => m.nodeGroupId === req.nodeGroupId && (!cluster || m.clusterId === cluster),
            )),
      );
      const key = (n: Node) => [n.name];
      const scope = `ListNodes|${cluster}|${req.organizationId}|${req.state}|${req.role}|${req.nodeGroupId}`;
      const page = pageOf(sortByPosition(nodes, key), key, req, scope);
      return { nodes: page.items.map((n) => nodeView(r, n, cluster)), nextPageToken: page.nextPageToken };
    },

    async revokeNode(req, ctx) {
      const caller = callerOf(ctx);
      const m: Mutation = { caller, action: "node.revoke", targetType: "node", targetId: req.nodeId };
      const reason =
        req.reason === RevocationReason.UNSPECIFIED ? RevocationReason.PRIVILEGE_WITHDRAWN : req.reason;
      await mutate(r, m, async (w) => {
        principalId("node_id", req.nodeId);
        if (REFUSED_REASONS.has(reason)) {
          throw invalidArgument(
            "reason: Fabric revocation is final; CERTIFICATE_HOLD and REMOVE_FROM_CRL are not allowed",
          );
        }
        text("comment", req.comment, 512);
        const found = await w.tx.query("SELECT state FROM nodes WHERE id = $1 FOR UPDATE", [req.nodeId]);
        if (found.rowCount === 0) throw notFound(`node "${req.nodeId}" does not exist`);
        // Already banned: only the CA step below is repeated (a retry after the CA was unreachable).
        if (found.rows[0].state === "revoked") return;
        await w.tx.query("UPDATE nodes SET state = 'revoked', revoked_at = now() WHERE id = $1", [
          req.nodeId,
        ]);
        const memberships = await w.tx.query(
          `UPDATE memberships SET state = 'revoked'
           WHERE id IN (SELECT id FROM memberships WHERE node_id = $1 ORDER BY id FOR UPDATE) RETURNING id`,
          [req.nodeId],
        );
        w.changes.touch("node", req.nodeId);
        for (const row of memberships.rows) w.changes.touch("membership", row.id as string);
        w.audit({ details: { reason: RevocationReason[reason] ?? String(reason), comment: req.comment } });
      });
      // The ban is committed: open sessions get SHUTDOWN and the router drops the node. Now the CA
      // revokes every certificate, which cuts the node's connections to every service.
      const certificates = { ...m, action: "node.revoke_certificates" };
      let revokedSerials: string[];
      try {
        const res = await r.ca.revoke({
          target: { case: "principal", value: { kind: PrincipalKind.NODE, id: req.nodeId } },
          reason,
          comment: req.comment,
        });
        revokedSerials = res.revokedSerials;
      } catch (err) {
        const cause = ConnectError.from(err);
        await recordAudit(r.pool, {
          actorId: caller.id,
          actorKind: caller.kind,
          action: certificates.action,
          targetType: "node",
          targetId: req.nodeId,
          outcome: "failed",
          details: { error: Code[cause.code] ?? "unknown", reason: cause.rawMessage },
        }).catch((auditErr: unknown) =>
          r.logger.warn(
            { err: (auditErr as Error).message, nodeId: req.nodeId },
            "could not audit a failed certificate revocation",
          ),
        );
        const message = `node "${req.nodeId}" is banned in the registry, but the CA did not revoke its certificates (${cause.rawMessage}); call RevokeNode again`;
        throw [Code.Unavailable, Code.DeadlineExceeded, Code.Canceled, Code.Unknown].includes(cause.code)
          ? unavailable(message)
          : failedPrecondition(message);
      }
      await recordAudit(r.pool, {
        actorId: caller.id,
        actorKind: caller.kind,
        action: certificates.action,
        targetType: "node",
        targetId: req.nodeId,
        outcome: "success",
        details: { serials: revokedSerials.join(",") },
      });
      return { node: await written(r, "node", req.nodeId), revokedSerials };
    },

    listMemberships(req, ctx) {
      const cluster = listCluster(callerOf(ctx), req.clusterId);
      const key = (m: Membership) => [m.clusterId, m.nodeId];
      const memberships = r.model
        .values("membership")
        .filter(
          (m) =>
            (!cluster || m.clusterId === cluster) &&
            (!req.nodeId || m.nodeId === req.nodeId) &&
            (!req.state || m.state === req.state),
        );
      const scope = `ListMemberships|${cluster}|${req.nodeId}|${req.state}`;
      const page = pageOf(sortByPosition(memberships, key), key, req, scope);
      return { memberships: page.items, nextPageToken: page.nextPageToken };
    },

    async disableMembership(req, ctx) {
      const m: Mutation = {
        caller: callerOf(ctx),
        action: "membership.disable",
        targetType: "membership",
        targetId: req.membershipId,
      };
      await mutate(r, m, async (w) => {
        required("membership_id", req.membershipId);
        text("reason", req.reason, 512, { required: true });
        const row = await lockMembership(w.tx, req.membershipId, m);
        if (row.state === "revoked")
          throw failedPrecondition("the membership is revoked (its node was revoked); that is final");
        if (row.state === "disabled") return;
        await w.tx.query(
          "UPDATE memberships SET state = 'disabled', disabled_at = now(), disabled_reason = $2 WHERE id = $1",
          [req.membershipId, req.reason],
        );
        w.changes.touch("membership", req.membershipId);
        w.changes.touch("node", row.node_id);
        w.audit({ details: { node_id: row.node_id, reason: req.reason } });
      });
      return { membership: await written(r, "membership", req.membershipId) };
    },

    async enableMembership(req, ctx) {
      const m: Mutation = {
        caller: callerOf(ctx),
        action: "membership.enable",
        targetType: "membership",
        targetId: req.membershipId,
      };
      await mutate(r, m, async (w) => {
        required("membership_id", req.membershipId);
        const row = await lockMembership(w.tx, req.membershipId, m);
        if (row.state === "revoked")
          throw failedPrecondition(
            "the membership is revoked (its node was revoked); the host must enroll as a new node",
          );
        if (row.state === "active") return;
        await w.tx.query(
          "UPDATE memberships SET state = 'active', disabled_at = NULL, disabled_reason = '' WHERE id = $1",
          [req.membershipId],
        );
        w.changes.touch("membership", req.membershipId);
        w.changes.touch("node", row.node_id);
        w.audit({ details: { node_id: row.node_id } });
      });
      return { membership: await written(r, "membership", req.membershipId) };
    },
  };

  /** Locks a membership for change, refusing admins of other clusters. */
  async function lockMembership(
    tx: Sql,
    id: string,
    m: Mutation,
  ): Promise<{ state: string; node_id: string }> {
    const found = await tx.query(
      "SELECT cluster_id, state, node_id FROM memberships WHERE id = $1 FOR UPDATE",
      [id],
    );
    if (found.rowCount === 0) throw notFound(`membership "${id}" does not exist`);
    m.clusterId = found.rows[0].cluster_id as string;
    requireCluster(m.caller, m.clusterId);
    return found.rows[0] as { state: string; node_id: string };
  }
}
