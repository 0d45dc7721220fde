import {
  FabricError,
  callerOf,
  failedPrecondition,
  invalidArgument,
  listCluster,
  notFound,
  permissionDenied,
  requireCluster,
  serve,
  unavailable,
  type AuditHandlers,
  type AuditInput,
  type Policy,
  type Principal,
  type ServiceRegistration,
} from "@fabric/platform";
import { MembershipState } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import {
  RouterService,
  type ExplainRequest,
  type WatchRequest,
  type WatchResponse,
} from "@fabric/proto/fabric/router/v1/router_pb.js";
import { explainNode } from "./explain.js";
import { GONE, snapshotKey, type SnapshotHub } from "./snapshot-hub.js";
import type { SnapshotEngine } from "./snapshot-engine.js";
import type { SnapshotSigner } from "./snapshot-signer.js";

/** Who may call what: nodes watch (their own snapshot, checked in the handler); admins explain. */
export const ROUTER_POLICY: Policy<typeof RouterService> = {
  watch: { kinds: ["node"] },
  explain: { adminRoles: ["platform-admin", "cluster-admin"] },
  // The audit log: each admin sees its own scope (the handler narrows); only platform-admins verify it.
  listAudit: { adminRoles: ["platform-admin", "cluster-admin", "org-admin"] },
  verifyAudit: { adminRoles: ["platform-admin"] },
};

export interface RouterRpcDeps {
  engine: SnapshotEngine;
  hub: SnapshotHub;
  signer: SnapshotSigner;
  /** Records a refused attempt in the router's audit log. */
  recordRefusal(event: AuditInput): Promise<void>;
  /** Most excluded members an Explain answer lists. */
  explainExcludedLimit: number;
  /** ListAudit and VerifyAudit over the router's audit log. */
  audit: AuditHandlers;
}

const NOT_LOADED = "the router has not loaded the fabric model from the registry yet; retry shortly";

export function routerService(deps: RouterRpcDeps): ServiceRegistration {
  const { engine, hub, signer } = deps;

  const refuse = async (
    principal: Principal,
    action: string,
    event: Partial<AuditInput>,
    message: string,
  ) => {
    await deps.recordRefusal({
      actorId: principal.id,
      actorKind: principal.kind,
      action,
      outcome: "refused",
      ...event,
      details: { reason: message, ...event.details },
    });
    return permissionDenied(message);
  };

  async function* watch(
    req: WatchRequest,
    signal: AbortSignal,
    principal: Principal,
  ): AsyncGenerator<WatchResponse> {
    const nodeId = principal.id;
    const clusterId = principal.cluster ?? "";
    // The table admits nodes only; the snapshot is the caller's own, so no one else may stand in for one.
    if (principal.kind !== "node") {
      throw await refuse(
        principal,
        "snapshot.watch",
        { targetType: "node", targetId: req.nodeId, clusterId: req.clusterId },
        `${principal.kind} "${principal.id}" is not a node; only a node watches its own snapshot`,
      );
    }
    if (req.nodeId && req.nodeId !== nodeId) {
      throw await refuse(
        principal,
        "snapshot.watch",
        { targetType: "node", targetId: req.nodeId, clusterId },
        `node "${nodeId}" may watch only its own snapshot, not node "${req.nodeId}"`,
      );
    }
    if (req.clusterId && req.clusterId !== clusterId) {
      throw await refuse(
        principal,
        "snapshot.watch",
        { targetType: "node", targetId: nodeId, clusterId: req.clusterId },
        `node "${nodeId}" holds a certificate for cluster "${clusterId}" and may watch only that cluster's snapshot, not "${req.clusterId}"`,
      );
    }
    if (!engine.synced) throw unavailable(NOT_LOADED);
    const membership = engine.fabric.clusters.get(clusterId)?.members.get(nodeId);
    if (membership?.state === MembershipState.REVOKED || engine.fabric.nodes.get(nodeId)?.revoked) {
      throw await refuse(
        principal,
        "snapshot.watch",
        { targetType: "node", targetId: nodeId, clusterId },
        `node "${nodeId}" is revoked in cluster "${clusterId}"; it must enroll as a new node`,
      );
    }
    // A membership the model has but whose first snapshot is still in the debounce window is waited for.
    if (!membership) {
      throw failedPrecondition(
        `node "${nodeId}" has no membership in cluster "${clusterId}" as of registry version ${engine.version}; ` +
          "if it has just joined, retry in a few seconds",
      );
    }

    const key = snapshotKey(clusterId, nodeId);
    // Subscribe before reading the current snapshot, so no version published in between is missed.
    const subscription = hub.subscribe(key);
    try {
      let last = req.knownVersion;
      const current = engine.current(clusterId, nodeId);
      if (current && current.version > last) {
        yield signer.envelope(current);
        last = current.version;
      }
      for (;;) {
        const next = await subscription.next(signal);
        if (next === undefined) return;
        if (next === GONE) {
          throw failedPrecondition(
            `node "${nodeId}" no longer has a membership in cluster "${clusterId}"; this stream is closed`,
          );
        }
        if (next.version <= last) continue;
        yield signer.envelope(next);
        last = next.version;
      }
    } finally {
      subscription.close();
    }
  }

  /**
   * Explain names a node and optionally a cluster. The cluster is checked against the caller's scope
   * before any lookup (a cluster-admin is answered for its own cluster only, so it learns nothing about
   * other clusters); the node is then resolved to its memberships, and one in that cluster is required.
   */
  async function explain(req: ExplainRequest, principal: Principal) {
    if (!req.nodeId) throw invalidArgument("node_id is required: the node whose peer selection to explain");
    let clusterId: string;
    try {
      clusterId = listCluster(principal, req.clusterId);
    } catch (err) {
      if (!(err instanceof FabricError)) throw err;
      throw await refuse(
        principal,
        "router.explain",
        { targetType: "node", targetId: req.nodeId, clusterId: req.clusterId },
        err.message,
      );
    }
    if (!engine.synced) throw unavailable(NOT_LOADED);
    const clusters = engine.fabric.clustersOf(req.nodeId);
    if (!clusterId) {
      if (clusters.length === 0) throw notFound(`node "${req.nodeId}" has no membership in any cluster`);
      if (clusters.length > 1) {
        throw invalidArgument(
          `node "${req.nodeId}" is a member of clusters ${clusters.join(", ")}; set cluster_id to pick one`,
        );
      }
      clusterId = clusters[0]!;
    } else if (!clusters.includes(clusterId)) {
      throw notFound(`node "${req.nodeId}" has no membership in cluster "${clusterId}"`);
    }
    requireCluster(principal, clusterId);
    return explainNode(engine, clusterId, req.nodeId, deps.explainExcludedLimit);
  }

  return serve(
    RouterService,
    {
      watch: (req, ctx) => watch(req, ctx.signal, callerOf(ctx)),
      explain: (req, ctx) => explain(req, callerOf(ctx)),
      ...deps.audit,
    },
    ROUTER_POLICY,
  );
}
