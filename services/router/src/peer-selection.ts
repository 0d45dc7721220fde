import { MembershipState } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import {
  compareIds,
  type ClusterState,
  type FabricModel,
  type NodeRecord,
  type ProbeRecord,
} from "./fabric-model.js";
import {
  ACTIVE_EXTENSION_SCORE,
  ENTRY_ROLE,
  RELAY_ROLE,
  TIER_SIZES,
  nodeClass,
  type NodeClass,
} from "./node-class.js";
import {
  WEIGHTS,
  diversityScore,
  failuresScore,
  latencyScore,
  loadScore,
  lossScore,
  regionScore,
  roleSuitability,
  total,
  trustScore,
  weightedSum,
  type CandidateKind,
  type Factors,
} from "./scoring.js";

/**
 * Score-based peer selection for one cluster, built to stay cheap at 10,000 nodes.
 *
 * A node's score of a candidate it has never probed depends only on the node's region and class, so
 * candidates are ranked once per (region, class) group, and every node of the group considers the
 * top of that shared ranking (its window) plus the nodes it has probe figures with. Each node then
 * scores only those few candidates with every factor, including a per-pair diversity term that keeps
 * the nodes of one group from all choosing the same peers. When a candidate changes, a node is
 * recomputed only if the candidate is among its selected peers, or now scores above its cut-off (the
 * last peer it selected), or the change pushed another node into or out of its group's window. That
 * rule is exact: incremental results always equal a full recompute.
 */

export type Tier = "active" | "warm" | "cold";

/** A candidate's node-only attributes, refreshed when the registry reports a change to it. */
export interface CandidateInfo {
  id: string;
  /** Empty when it may be a peer; otherwise why not (shown by Explain). */
  excludedReason: string;
  kind: CandidateKind;
  /** Organizations its relay-node assignments allow ("*" = all), for routes that relay through it. */
  relayScope: string;
  region: string;
  addresses: string[];
  hash: number;
  factors: { load: number; trust: number };
  /** Weighted load and trust: the part of every score that depends on the candidate alone. */
  intrinsic: number;
}

/** A candidate and its total score from one selecting node. */
export interface RankedCandidate {
  info: CandidateInfo;
  total: number;
}

/** The same with every factor, for Explain. */
export interface ScoredCandidate extends RankedCandidate {
  factors: Factors;
}

export interface SelectedPeer extends RankedCandidate {
  tier: Tier;
}

export interface Selection {
  nodeId: string;
  groupKey: string;
  nodeClass: NodeClass;
  /** Selected peers, best first. */
  peers: SelectedPeer[];
  /** Ids of the selected peers, for the "is it one of mine" test. */
  peerIds: Set<string>;
  /** The last selected peer, when some considered candidate was left out; undefined = nothing was. */
  cutoff: { total: number; id: string } | undefined;
}

/** The probe-based part of a score for a pair never probed: the same for every such pair. */
const UNPROBED_PAIR =
  WEIGHTS.latency * latencyScore(undefined) +
  WEIGHTS.loss * lossScore(undefined) +
  WEIGHTS.recentFailures * failuresScore(undefined);

interface GroupEntry {
  id: string;
  score: number;
}

/** All eligible candidates of a cluster, ranked for one (region, class) group of selecting nodes. */
class GroupRanking {
  readonly entries: GroupEntry[] = [];
  /** Ids of the first `windowSize + 1` entries (one more, as a node never considers itself). */
  window = new Set<string>();
  readonly selectors = new Set<string>();

  constructor(
    readonly region: string,
    readonly nodeClass: NodeClass,
    readonly windowSize: number,
  ) {}

  score(c: CandidateInfo): number {
    return (
      UNPROBED_PAIR +
      WEIGHTS.region * regionScore(this.region, c.region) +
      WEIGHTS.roleSuitability * roleSuitability(this.nodeClass, c.kind) +
      c.intrinsic
    );
  }

  rebuild(candidates: Iterable<CandidateInfo>): void {
    this.entries.length = 0;
    for (const c of candidates) if (!c.excludedReason) this.entries.push({ id: c.id, score: this.score(c) });
    this.entries.sort(byScoreThenId);
    this.refreshWindow();
  }

  remove(c: CandidateInfo): void {
    if (c.excludedReason) return;
    const i = this.position({ id: c.id, score: this.score(c) });
    if (this.entries[i]?.id === c.id) this.entries.splice(i, 1);
  }

  insert(c: CandidateInfo): void {
    if (c.excludedReason) return;
    const entry = { id: c.id, score: this.score(c) };
    this.entries.splice(this.position(entry), 0, entry);
  }

  refreshWindow(): void {
    const window = new Set<string>();
    const n = Math.min(this.entries.length, this.windowSize + 1);
    for (let i = 0; i < n; i++) window.add(this.entries[i]!.id);
    this.window = window;
  }

  private position(entry: GroupEntry): number {
    let lo = 0;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (byScoreThenId(this.entries[mid]!, entry) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

function byScoreThenId(a: { score: number; id: string }, b: { score: number; id: string }): number {
  return b.score - a.score || compareIds(a.id, b.id);
}

function byTotalThenId(a: RankedCandidate, b: RankedCandidate): number {
  return b.total - a.total || compareIds(a.info.id, b.info.id);
}

function windowSizeOf(cls: NodeClass): number {
  const t = TIER_SIZES[cls];
  return 2 * (t.activeMax + t.warm + t.cold);
}

/** What changed among a cluster's candidates in one batch. */
export interface CandidateUpdate {
  /** Candidates whose info changed (or that appeared or left). */
  changed: Set<string>;
  /** Per group: ids that entered or left its window. */
  windowMoves: Map<string, Set<string>>;
}

export class ClusterPeers {
  readonly candidates = new Map<string, CandidateInfo>();
  readonly selections = new Map<string, Selection>();
  private readonly groups = new Map<string, GroupRanking>();

  constructor(
    private readonly model: FabricModel,
    readonly cluster: ClusterState,
  ) {}

  /** Recomputes every candidate's info and every ranking from scratch. */
  rebuild(nowMs: number): void {
    this.candidates.clear();
    for (const nodeId of this.cluster.members.keys()) {
      this.candidates.set(nodeId, this.candidateInfo(nodeId, nowMs));
    }
    for (const g of this.groups.values()) g.rebuild(this.candidates.values());
  }

  /** Refreshes the given candidates and reports what moved. */
  updateCandidates(ids: Iterable<string>, nowMs: number): CandidateUpdate {
    const update: CandidateUpdate = { changed: new Set(), windowMoves: new Map() };
    const before = new Map([...this.groups].map(([key, g]) => [key, g.window]));
    for (const id of ids) {
      const old = this.candidates.get(id);
      const next = this.cluster.members.has(id) ? this.candidateInfo(id, nowMs) : undefined;
      if (!old && !next) continue;
      if (old && next && sameCandidate(old, next)) continue;
      update.changed.add(id);
      for (const g of this.groups.values()) {
        if (old) g.remove(old);
        if (next) g.insert(next);
      }
      if (next) this.candidates.set(id, next);
      else this.candidates.delete(id);
    }
    if (update.changed.size === 0) return update;
    for (const [key, g] of this.groups) {
      g.refreshWindow();
      const was = before.get(key) ?? new Set<string>();
      const moves = new Set<string>();
      for (const id of g.window) if (!was.has(id)) moves.add(id);
      for (const id of was) if (!g.window.has(id)) moves.add(id);
      if (moves.size > 0) update.windowMoves.set(key, moves);
    }
    return update;
  }

  /**
   * Selecting nodes that may be affected by `update` beyond those whose selection names a changed
   * candidate: every node of a group whose window a changed or moving candidate is in, and the nodes
   * with probe figures to or from a changed candidate. Each still goes through isAffected.
   */
  selectorsToTest(update: CandidateUpdate): Set<string> {
    const out = new Set<string>();
    for (const [key, g] of this.groups) {
      let touched = update.windowMoves.has(key);
      if (!touched) {
        for (const id of update.changed) {
          if (g.window.has(id)) {
            touched = true;
            break;
          }
        }
      }
      if (touched) for (const s of g.selectors) out.add(s);
    }
    for (const id of update.changed) {
      for (const s of this.cluster.probedBy.get(id) ?? []) out.add(s);
      for (const s of this.cluster.probes.get(id)?.keys() ?? []) out.add(s);
    }
    return out;
  }

  /**
   * Whether a node's selection can differ after `update`: one of its peers changed, or a changed or
   * window-moving candidate it considers now beats its cut-off.
   */
  isAffected(nodeId: string, update: CandidateUpdate): boolean {
    const sel = this.selections.get(nodeId);
    if (!sel) return true;
    const moves = update.windowMoves.get(sel.groupKey);
    const test = (id: string): boolean => {
      if (sel.peerIds.has(id)) return true;
      if (id === nodeId) return false;
      const c = this.candidates.get(id);
      if (!c || c.excludedReason || !this.considers(sel, nodeId, id)) return false;
      if (!sel.cutoff) return true;
      const total = this.rank(this.model.nodes.get(nodeId), sel.nodeClass, c, this.probeBetween(nodeId, id));
      return total > sel.cutoff.total || (total === sel.cutoff.total && id < sel.cutoff.id);
    };
    for (const id of update.changed) if (test(id)) return true;
    if (moves) for (const id of moves) if (test(id)) return true;
    return false;
  }

  private considers(sel: Selection, nodeId: string, candidateId: string): boolean {
    if (this.groups.get(sel.groupKey)?.window.has(candidateId)) return true;
    return (
      this.cluster.probes.get(nodeId)?.has(candidateId) === true ||
      this.cluster.probedBy.get(nodeId)?.has(candidateId) === true
    );
  }

  /** Computes and stores the node's selection. */
  select(nodeId: string): Selection {
    const cls = nodeClass(this.cluster, this.model.nodes.get(nodeId), nodeId);
    const group = this.groupFor(nodeId, cls);
    const previous = this.selections.get(nodeId);
    if (previous && previous.groupKey !== groupKey(group.region, cls))
      this.leaveGroup(nodeId, previous.groupKey);
    group.selectors.add(nodeId);
    const ranked = this.consider(nodeId, cls, group);
    const sizes = TIER_SIZES[cls];
    const peers: SelectedPeer[] = [];
    let active = 0;
    for (const c of ranked) {
      if (active < sizes.activeMin || (active < sizes.activeMax && c.total >= ACTIVE_EXTENSION_SCORE)) {
        peers.push(selected(c, "active"));
        active++;
        continue;
      }
      break;
    }
    const rest = ranked.slice(active);
    for (const c of rest.slice(0, sizes.warm)) peers.push(selected(c, "warm"));
    for (const c of rest.slice(sizes.warm, sizes.warm + sizes.cold)) peers.push(selected(c, "cold"));
    const last = peers[peers.length - 1];
    const selection: Selection = {
      nodeId,
      groupKey: groupKey(group.region, cls),
      nodeClass: cls,
      peers,
      peerIds: new Set(peers.map((p) => p.info.id)),
      cutoff: ranked.length > peers.length && last ? { total: last.total, id: last.info.id } : undefined,
    };
    this.selections.set(nodeId, selection);
    return selection;
  }

  /** Forgets a node that no longer selects peers (left the cluster, or its roles need none). */
  forget(nodeId: string): void {
    const sel = this.selections.get(nodeId);
    if (!sel) return;
    this.selections.delete(nodeId);
    this.leaveGroup(nodeId, sel.groupKey);
  }

  /** Every candidate the node considers with its total score, best first. */
  consider(nodeId: string, cls: NodeClass, group = this.groupFor(nodeId, cls, false)): RankedCandidate[] {
    const self = this.model.nodes.get(nodeId);
    const ranked: RankedCandidate[] = [];
    // The node's own probe figures, and who probed it, looked up once rather than per candidate.
    const probed = this.cluster.probes.get(nodeId);
    const probers = this.cluster.probedBy.get(nodeId);
    const add = (id: string) => {
      if (id === nodeId) return;
      const c = this.candidates.get(id);
      if (!c || c.excludedReason) return;
      const probe = probed?.get(id) ?? (probers?.has(id) ? this.cluster.probe(id, nodeId) : undefined);
      ranked.push({ info: c, total: this.rank(self, cls, c, probe) });
    };
    for (const id of group.window) add(id);
    if (probed) for (const id of probed.keys()) if (!group.window.has(id)) add(id);
    if (probers) {
      for (const id of probers) if (!group.window.has(id) && !probed?.has(id)) add(id);
    }
    return ranked.sort(byTotalThenId);
  }

  /** Probe figures of a pair: the selecting node's own, else the candidate's of it. */
  private probeBetween(nodeId: string, candidateId: string): ProbeRecord | undefined {
    return this.cluster.probe(nodeId, candidateId) ?? this.cluster.probe(candidateId, nodeId);
  }

  /** The selecting node's total score of one candidate, without building the factors. */
  rank(
    self: NodeRecord | undefined,
    cls: NodeClass,
    c: CandidateInfo,
    probe: ProbeRecord | undefined,
  ): number {
    return weightedSum(
      latencyScore(probe?.latencyMs),
      lossScore(probe?.loss),
      c.factors.load,
      regionScore(self?.region ?? "", c.region),
      roleSuitability(cls, c.kind),
      c.factors.trust,
      failuresScore(probe?.failures),
      diversityScore(self?.hash ?? 0, c.hash),
    );
  }

  /** The selecting node's score of one candidate, factor by factor. */
  score(nodeId: string, cls: NodeClass, c: CandidateInfo): ScoredCandidate {
    const self = this.model.nodes.get(nodeId);
    const probe = this.probeBetween(nodeId, c.id);
    const factors: Factors = {
      latency: latencyScore(probe?.latencyMs),
      loss: lossScore(probe?.loss),
      recentFailures: failuresScore(probe?.failures),
      load: c.factors.load,
      region: regionScore(self?.region ?? "", c.region),
      roleSuitability: roleSuitability(cls, c.kind),
      trust: c.factors.trust,
      diversity: diversityScore(self?.hash ?? 0, c.hash),
    };
    return { info: c, factors, total: total(factors) };
  }

  /** The node's ranking group; `keep` = false builds a throwaway one if none exists (Explain). */
  private groupFor(nodeId: string, cls: NodeClass, keep = true): GroupRanking {
    const region = this.model.nodes.get(nodeId)?.region ?? "";
    const key = groupKey(region, cls);
    let group = this.groups.get(key);
    if (!group) {
      group = new GroupRanking(region, cls, windowSizeOf(cls));
      group.rebuild(this.candidates.values());
      if (keep) this.groups.set(key, group);
    }
    return group;
  }

  private leaveGroup(nodeId: string, key: string): void {
    const group = this.groups.get(key);
    group?.selectors.delete(nodeId);
    if (group?.selectors.size === 0) this.groups.delete(key);
  }

  /** A member's attributes as a candidate, and whether (and why not) it may be anyone's peer. */
  candidateInfo(nodeId: string, nowMs: number): CandidateInfo {
    const node = this.model.nodes.get(nodeId);
    const membership = this.cluster.members.get(nodeId);
    const load = loadScore(node?.load);
    const trust = trustScore(node?.health ?? 0, membership?.joinedAtMs, nowMs);
    return {
      id: nodeId,
      excludedReason: exclusion(this.cluster, nodeId, node, membership?.state),
      kind: this.cluster.holds(nodeId, RELAY_ROLE)
        ? "relay"
        : this.cluster.holds(nodeId, ENTRY_ROLE)
          ? "entry"
          : "other",
      relayScope: relayScope(this.cluster, nodeId),
      region: node?.region ?? "",
      addresses: node?.addresses ?? [],
      hash: node?.hash ?? 0,
      factors: { load, trust },
      intrinsic: WEIGHTS.load * load + WEIGHTS.trust * trust,
    };
  }
}

function selected(c: RankedCandidate, tier: Tier): SelectedPeer {
  return { info: c.info, total: c.total, tier };
}

function relayScope(cluster: ClusterState, nodeId: string): string {
  if (!cluster.holds(nodeId, RELAY_ROLE)) return "";
  const orgs = cluster.organizationsFor(nodeId, RELAY_ROLE);
  return orgs ? [...orgs].sort(compareIds).join(",") : "*";
}

function groupKey(region: string, cls: NodeClass): string {
  return `${cls}\u0000${region}`;
}

function exclusion(
  cluster: ClusterState,
  nodeId: string,
  node: ReturnType<FabricModel["nodes"]["get"]>,
  state: MembershipState | undefined,
): string {
  if (state === MembershipState.REVOKED || node?.revoked) return "revoked";
  if (state === MembershipState.DISABLED) return "membership disabled";
  if (state !== MembershipState.ACTIVE) return "no active membership";
  if (!node) return "unknown node";
  if (!node.online) return "offline";
  if (node.addresses.length === 0) return "no mesh address";
  if (nodeClass(cluster, node, nodeId) === "thin") return "thin node";
  return "";
}

function sameCandidate(a: CandidateInfo, b: CandidateInfo): boolean {
  return (
    a.excludedReason === b.excludedReason &&
    a.kind === b.kind &&
    a.relayScope === b.relayScope &&
    a.region === b.region &&
    a.intrinsic === b.intrinsic &&
    a.factors.load === b.factors.load &&
    a.factors.trust === b.factors.trust &&
    a.addresses.length === b.addresses.length &&
    a.addresses.every((x, i) => x === b.addresses[i])
  );
}
