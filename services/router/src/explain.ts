import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { MembershipState } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import {
  ExplainResponseSchema,
  PeerCandidateSchema,
  PeerTier,
  type ExplainResponse,
  type PeerCandidate,
} from "@fabric/proto/fabric/router/v1/router_pb.js";
import { compareIds } from "./fabric-model.js";
import { TIER_SIZES, nodeClass, slicesFor } from "./node-class.js";
import type { ClusterPeers, ScoredCandidate, Tier } from "./peer-selection.js";
import type { SnapshotEngine } from "./snapshot-engine.js";

const TIERS: Record<Tier, PeerTier> = { active: PeerTier.ACTIVE, warm: PeerTier.WARM, cold: PeerTier.COLD };

/**
 * Why a node got its peers: every candidate it considered (the top of its group's ranking and the
 * nodes it has probe figures with) with per-factor scores and the tier it landed in, then the cluster
 * members excluded before scoring, by id, at most `excludedLimit` of them.
 */
export function explainNode(
  engine: SnapshotEngine,
  clusterId: string,
  nodeId: string,
  excludedLimit: number,
): ExplainResponse {
  const peers = engine.clusterPeers(clusterId);
  const cluster = peers.cluster;
  const node = engine.fabric.nodes.get(nodeId);
  const cls = nodeClass(cluster, node, nodeId);
  const sizes = TIER_SIZES[cls];
  const selection = peers.selections.get(nodeId);
  const tiers = new Map((selection?.peers ?? []).map((p) => [p.info.id, p.tier]));
  const notSelecting = selection ? "" : whyNoPeers(peers, nodeId);
  const loadOf = (id: string) => engine.fabric.nodes.get(id)?.load ?? 0;

  const candidates: PeerCandidate[] = peers.consider(nodeId, cls).map((c) => {
    const tier = tiers.get(c.info.id);
    const reason = tier ? "" : notSelecting || "below cold cut-off";
    return candidate(peers, nodeId, peers.score(nodeId, cls, c.info), tier, reason, loadOf(c.info.id));
  });
  const excluded = [...peers.candidates.values()]
    .filter((c) => c.excludedReason && c.id !== nodeId)
    .sort((a, b) => compareIds(a.id, b.id));
  for (const c of excluded.slice(0, excludedLimit)) {
    candidates.push(
      candidate(peers, nodeId, peers.score(nodeId, cls, c), undefined, c.excludedReason, loadOf(c.id)),
    );
  }
  return create(ExplainResponseSchema, {
    nodeId,
    clusterId,
    snapshotVersion: engine.current(clusterId, nodeId)?.version ?? 0n,
    activeTarget: sizes.activeMax,
    activeMin: sizes.activeMin,
    warmTarget: sizes.warm,
    coldTarget: sizes.cold,
    nodeClass: cls,
    candidates,
    omittedExcluded: Math.max(0, excluded.length - excludedLimit),
  });
}

function whyNoPeers(peers: ClusterPeers, nodeId: string): string {
  const membership = peers.cluster.members.get(nodeId);
  if (membership?.state === MembershipState.DISABLED)
    return "node's membership is disabled: it gets no peers";
  if (membership?.state !== MembershipState.ACTIVE) return "node has no active membership: it gets no peers";
  const roles = peers.cluster.rolesOf(nodeId);
  if (!slicesFor(roles).peers) return `node's roles (${roles.join(", ")}) take no peers`;
  return "node gets no peers";
}

function candidate(
  peers: ClusterPeers,
  nodeId: string,
  c: ScoredCandidate,
  tier: Tier | undefined,
  excludedReason: string,
  load: number,
): PeerCandidate {
  const probe = peers.cluster.probe(nodeId, c.info.id) ?? peers.cluster.probe(c.info.id, nodeId);
  return create(PeerCandidateSchema, {
    nodeId: c.info.id,
    tier: tier ? TIERS[tier] : PeerTier.UNSPECIFIED,
    excludedReason,
    scores: { ...c.factors, total: c.total },
    ...(probe?.latencyMs !== undefined ? { latency: durationFromMs(probe.latencyMs) } : {}),
    lossRatio: probe?.loss ?? 0,
    load,
    region: c.info.region,
    recentFailures: probe?.failures ?? 0,
  });
}
