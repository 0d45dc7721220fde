import { create } from "@bufbuild/protobuf";
import { MembershipState } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import {
  EntryPolicySchema,
  PeerTier,
  ResourceReferenceSchema,
  type ResourceReference,
} from "@fabric/proto/fabric/router/v1/router_pb.js";
import { compareIds, type FabricModel } from "./fabric-model.js";
import { EGRESS_ROLE, slicesFor } from "./node-class.js";
import type { CandidateInfo, ClusterPeers, Tier } from "./peer-selection.js";
import { computeRoutes, entryOrganizations, type RouteTable } from "./routes.js";
import {
  encodePeerIdentity,
  encodeSnapshotContent,
  type PeerEntry,
  type SnapshotParts,
} from "./snapshot-encoding.js";

/** A snapshot's encoded content (no version or generation time yet) and the other nodes it names. */
export interface BuiltSnapshot {
  content: Uint8Array;
  /** A change to any of these nodes may change the snapshot. */
  refs: Set<string>;
}

const TIERS: Record<Tier, PeerTier> = {
  active: PeerTier.ACTIVE,
  warm: PeerTier.WARM,
  cold: PeerTier.COLD,
};

/** Resource type of an egress pool an egress node backs. */
export const EGRESS_POOL_RESOURCE = "egress-pool";

// A candidate's encoded id, addresses and region, shared by every snapshot listing it; candidate infos
// are replaced when they change, so the cache never goes stale.
const identities = new WeakMap<CandidateInfo, Uint8Array>();

function peerEntry(c: CandidateInfo, tier: PeerTier, total: number): PeerEntry {
  let identity = identities.get(c);
  if (!identity) {
    identity = encodePeerIdentity(c.id, c.addresses, c.region);
    identities.set(c, identity);
  }
  return { identity, tier, score: Math.round(total * 1000) / 1000 };
}

/**
 * Builds what one node of one cluster may know (see node-class.ts for the slices), or undefined when
 * the node has no membership in the cluster. A disabled or revoked membership yields an empty
 * snapshot, so the agent drops its peers, routes and workloads.
 */
export function buildSnapshotContent(
  model: FabricModel,
  peers: ClusterPeers,
  table: RouteTable,
  nodeId: string,
): BuiltSnapshot | undefined {
  const cluster = peers.cluster;
  const membership = cluster.members.get(nodeId);
  if (!membership) {
    peers.forget(nodeId);
    return undefined;
  }
  const parts: SnapshotParts = {
    nodeId,
    clusterId: cluster.id,
    roles: [],
    peers: [],
    routes: [],
    workloads: [],
    resources: [],
  };
  const refs = new Set<string>();
  if (membership.state !== MembershipState.ACTIVE || model.nodes.get(nodeId)?.revoked) {
    peers.forget(nodeId);
    return { content: encodeSnapshotContent(parts), refs };
  }
  const roles = cluster.rolesOf(nodeId);
  const slices = slicesFor(roles);
  parts.roles = roles;

  if (slices.peers) {
    const selection = peers.select(nodeId);
    const list = selection.peers.map((p) => peerEntry(p.info, TIERS[p.tier], p.total));
    for (const p of selection.peers) refs.add(p.info.id);
    if (slices.routes) {
      const { routes, contacts } = computeRoutes(table, peers, nodeId, selection);
      parts.routes = routes;
      // Next hops outside the peer tiers are dialled on demand: listed cold, for their addresses.
      const extra = [...contacts]
        .filter((id) => !selection.peerIds.has(id))
        .map((id) => peers.score(nodeId, selection.nodeClass, peers.candidates.get(id)!))
        .sort((a, b) => b.total - a.total || compareIds(a.info.id, b.info.id));
      for (const c of extra) {
        refs.add(c.info.id);
        list.push(peerEntry(c.info, PeerTier.COLD, c.total));
      }
    }
    parts.peers = list;
  } else {
    peers.forget(nodeId);
  }

  if (slices.entryPolicy) {
    const orgs = entryOrganizations(cluster, nodeId);
    const visible = new Set(orgs);
    parts.entryPolicy = create(EntryPolicySchema, {
      organizationIds: orgs,
      egressPoolIds: [...cluster.pools.values()]
        .filter((p) => p.organizationIds.some((o) => visible.has(o)))
        .map((p) => p.id)
        .sort(compareIds),
      listenAddresses: model.nodes.get(nodeId)?.addresses ?? [],
    });
  }

  parts.workloads = cluster.workloadsOf(nodeId);

  if (slices.poolResources) {
    const resources: ResourceReference[] = [];
    const pools = [...(cluster.poolsByMember.get(nodeId) ?? [])].sort((a, b) => compareIds(a.id, b.id));
    for (const pool of pools) {
      for (const org of pool.organizationIds.length > 0 ? pool.organizationIds : [""]) {
        if (!cluster.allows(nodeId, EGRESS_ROLE, org)) continue;
        resources.push(
          create(ResourceReferenceSchema, { type: EGRESS_POOL_RESOURCE, id: pool.id, organizationId: org }),
        );
      }
    }
    parts.resources = resources;
  }
  return { content: encodeSnapshotContent(parts), refs };
}
