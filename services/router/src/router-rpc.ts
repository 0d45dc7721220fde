import {
  failedPrecondition,
  invalidArgument,
  notFound,
  permissionDenied,
  principalOf,
  serve,
  unavailable,
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
};

export interface RouterRpcDeps {
  engine: SnapshotEngine;
  hub: SnapshotHub;
  signer: SnapshotSigner;
  /** Records a refused attempt in the router's audit log. */
  recordRefusal(event: AuditInput): Promise<void>;
  /** Most excluded members an Explain answer lists. */
  explainExcludedLimit: number;
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

  async function explain(req: ExplainRequest, principal: Principal) {
    if (!req.nodeId) throw invalidArgument("node_id is required: the node whose peer selection to explain");
    let clusterId = req.clusterId;
    if (principal.adminRole === "cluster-admin") {
      // Checked before any lookup, so a cluster-admin learns nothing about other clusters.
      const own = principal.cluster;
      if (!own || (clusterId && clusterId !== own)) {
        throw await refuse(
          principal,
          "router.explain",
          { targetType: "node", targetId: req.nodeId, clusterId },
          own
            ? `cluster-admin "${principal.id}" administers cluster "${own}", not "${clusterId}"`
            : `cluster-admin "${principal.id}" holds a certificate that names no cluster`,
        );
      }
      clusterId = own;
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
    return explainNode(engine, clusterId, req.nodeId, deps.explainExcludedLimit);
  }

  return serve(
    RouterService,
    {
      watch: (req, ctx) => watch(req, ctx.signal, principalOf(ctx.values)!),
      explain: (req, ctx) => explain(req, principalOf(ctx.values)!),
    },
    ROUTER_POLICY,
  );
}
