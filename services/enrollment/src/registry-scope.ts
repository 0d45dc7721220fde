import { Code, ConnectError } from "@connectrpc/connect";
import {
  clusterScopeOf,
  failedPrecondition,
  notFound,
  permissionDenied,
  unavailable,
  type FabricError,
  type Principal,
} from "@fabric/platform";
import { NodeState } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import type { Enrollment } from "./context.js";

/**
 * The ids of enrollment requests that name registry objects, resolved through the registry (which owns
 * nodes and organizations) and checked against the caller's scope before anything is decided.
 */

/** Asks the registry; its NotFound becomes `missing`, any other failure Unavailable (never the caller's). */
async function ask<T>(what: string, missing: () => FabricError, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    const error = ConnectError.from(err);
    if (error.code === Code.NotFound) throw missing();
    throw unavailable(`the registry could not tell ${what} (${error.rawMessage}); retry`);
  }
}

/**
 * Checks the node an approval attaches a join request to (ApproveJoinRequest.node_id, "the same host
 * joining another cluster"). Attaching gives the joining host that node's identity, so the node must
 * exist, lie wholly within the approver's scope (a platform-admin reaches every node; a cluster-admin
 * only nodes all of whose memberships are in its cluster, and those outside it do not exist as far as it
 * can tell), not be revoked, and not already be a member of the request's cluster (that would hand a
 * second host the identity the node holds there).
 */
export async function requireAttachableNode(
  deps: Pick<Enrollment, "registry">,
  caller: Principal,
  nodeId: string,
  clusterId: string,
): Promise<void> {
  const missing = () =>
    notFound(`node "${nodeId}" does not exist; leave node_id empty to enroll the host as a new node`);
  const { node } = await ask(`which clusters node "${nodeId}" belongs to`, missing, () =>
    deps.registry.getNode({ nodeId }),
  );
  if (!node) throw missing();
  const clusters = node.memberships.map((m) => m.clusterId);
  const own = clusterScopeOf(caller);
  if (own !== undefined) {
    if (!clusters.includes(own)) throw missing();
    if (clusters.some((c) => c !== own)) {
      throw permissionDenied(
        `node "${nodeId}" is also a member of clusters cluster-admin "${caller.id}" does not administer; ask a platform-admin to attach it`,
      );
    }
  }
  if (node.state === NodeState.REVOKED) {
    throw failedPrecondition(`node "${nodeId}" is revoked; enroll the host as a new node`);
  }
  if (clusters.includes(clusterId)) {
    throw failedPrecondition(
      `node "${nodeId}" is already a member of cluster "${clusterId}"; attach only a node of another cluster, or leave node_id empty`,
    );
  }
}

/**
 * Checks the cluster an org-admin names as its developer's default (IssueDeveloperPin.default_cluster_id):
 * one its organization is served by, as the registry's organization view lists them. Whether another
 * cluster exists is not said.
 */
export async function requireOrganizationCluster(
  deps: Pick<Enrollment, "registry">,
  organizationId: string,
  clusterId: string,
): Promise<void> {
  const outside = () =>
    permissionDenied(
      `organization "${organizationId}" is not served by cluster "${clusterId}"; name one of its clusters as default_cluster_id, or leave it empty`,
    );
  const { overview } = await ask(`which clusters serve organization "${organizationId}"`, outside, () =>
    deps.registry.getOrgOverview({ organizationId }),
  );
  if (!overview?.clusters.some((c) => c.clusterId === clusterId)) throw outside();
}
