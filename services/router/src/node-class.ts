import type { ClusterState, NodeRecord } from "./fabric-model.js";

/** Built-in roles the router treats specially. */
export const RELAY_ROLE = "relay-node";
export const ENTRY_ROLE = "entry-node";
export const EGRESS_ROLE = "egress-node";

/**
 * Peer-selection class of a node in a cluster:
 * - relay: holds `relay-node` (it carries mesh traffic for others);
 * - thin: not a relay, and labelled `thin=true` by its operator or reporting no mesh address (it only
 *   dials out, like a mobile host);
 * - normal: everything else.
 */
export type NodeClass = "relay" | "normal" | "thin";

export interface TierSizes {
  activeMin: number;
  activeMax: number;
  warm: number;
  cold: number;
}

export const TIER_SIZES: Record<NodeClass, TierSizes> = {
  normal: { activeMin: 3, activeMax: 5, warm: 4, cold: 4 },
  relay: { activeMin: 8, activeMax: 20, warm: 8, cold: 8 },
  thin: { activeMin: 1, activeMax: 3, warm: 2, cold: 2 },
};

/** Beyond the class minimum, a candidate becomes active only if it scores at least this. */
export const ACTIVE_EXTENSION_SCORE = 0.7;

export function nodeClass(cluster: ClusterState, node: NodeRecord | undefined, nodeId: string): NodeClass {
  if (cluster.holds(nodeId, RELAY_ROLE)) return "relay";
  if (!node || node.thinLabel || node.addresses.length === 0) return "thin";
  return "normal";
}

/**
 * Need-to-know: which parts of a snapshot a node gets, from the roles it holds in the cluster.
 * - core (relay-node, or no role at all: a plain mesh member): peers; relays also routes;
 * - ingress (entry-node): entry policy, routes for its organizations, and peers to forward through;
 * - egress and service roles: their assigned workloads, and for egress-node the pools it backs.
 * Workloads are never a slice of their own: a node gets exactly the workloads placed on it.
 */
export interface Slices {
  peers: boolean;
  routes: boolean;
  entryPolicy: boolean;
  poolResources: boolean;
}

export function slicesFor(roles: readonly string[]): Slices {
  const relay = roles.includes(RELAY_ROLE);
  const entry = roles.includes(ENTRY_ROLE);
  return {
    peers: relay || entry || roles.length === 0,
    routes: relay || entry,
    entryPolicy: entry,
    poolResources: roles.includes(EGRESS_ROLE),
  };
}
