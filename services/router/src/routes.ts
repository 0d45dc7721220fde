import { compareIds, type ClusterState } from "./fabric-model.js";
import { EGRESS_ROLE, ENTRY_ROLE, RELAY_ROLE } from "./node-class.js";
import type { CandidateInfo, ClusterPeers, Selection } from "./peer-selection.js";
import { regionScore } from "./scoring.js";
import type { RouteEntry } from "./snapshot-encoding.js";

/** Destinations listed per route: the preferred one and up to four to fail over to. */
const LISTED_DESTINATIONS = 5;
/** Relays offered as indirect paths per route. */
const MAX_RELAY_FALLBACKS = 2;
/** Failover next hops kept per route. */
const MAX_FAILOVER = 4;

/**
 * Where routes lead, for one cluster: one target per egress pool and organization allowed on it
 * (exits: eligible pool members whose egress-node assignment allows that organization) and one per
 * workload (service nodes: eligible nodes it is placed on). Each target keeps its destinations ranked
 * per holder region — heavier pool weight first, then region closeness, then load and trust, then id —
 * and the top of that ranking is shared by every holder in the region. A target whose top changed is
 * reported, so only the holders that carry it are rebuilt.
 */
export interface RouteTarget {
  /** The route id: `egress/<pool>` (platform), `egress/<pool>/<org>` or `service/<workload>`. */
  key: string;
  kind: "pool" | "workload";
  /** Pool or workload id. */
  id: string;
  /** "" = platform traffic. */
  organizationId: string;
  /** Eligible destinations (unordered) with their pool weight (100 for service nodes). */
  nodes: Map<string, number>;
}

export class RouteTable {
  private targets = new Map<string, RouteTarget>();
  /** Top destinations per target key and holder region. */
  private readonly ranked = new Map<string, Map<string, string[]>>();
  /** Target keys each node is a destination of. */
  private byNode = new Map<string, Set<string>>();

  constructor(private readonly peers: ClusterPeers) {}

  get cluster(): ClusterState {
    return this.peers.cluster;
  }

  /** Targets in route id order. */
  all(): RouteTarget[] {
    return [...this.targets.values()].sort((a, b) => compareIds(a.key, b.key));
  }

  /** The organization a target's traffic belongs to; undefined for a target that no longer exists. */
  organizationOf(key: string): string | undefined {
    return this.targets.get(key)?.organizationId;
  }

  /** Recomputes every target; returns the keys whose destinations or ranking changed. */
  rebuild(): Set<string> {
    const before = this.snapshotRankings();
    const targets = new Map<string, RouteTarget>();
    for (const pool of this.cluster.pools.values()) {
      for (const org of pool.organizationIds.length > 0 ? pool.organizationIds : [""]) {
        const key = org ? `egress/${pool.id}/${org}` : `egress/${pool.id}`;
        const nodes = new Map<string, number>();
        for (const m of pool.members) {
          if (this.eligible(m.nodeId) && this.cluster.allows(m.nodeId, EGRESS_ROLE, org))
            nodes.set(m.nodeId, m.weight);
        }
        targets.set(key, { key, kind: "pool", id: pool.id, organizationId: org, nodes });
      }
    }
    for (const w of this.cluster.workloads.values()) {
      const key = `service/${w.id}`;
      const nodes = new Map<string, number>();
      for (const id of this.cluster.placement(w)) if (this.eligible(id)) nodes.set(id, 100);
      targets.set(key, { key, kind: "workload", id: w.id, organizationId: w.organizationId, nodes });
    }
    this.targets = targets;
    this.byNode = new Map();
    for (const t of targets.values()) for (const id of t.nodes.keys()) this.index(id, t.key);
    this.ranked.clear();
    return this.diff(before);
  }

  /**
   * Recomputes the targets the given nodes are (or now may be) destinations of, after their
   * eligibility, load, trust, region or assignments changed; returns the keys whose top changed.
   */
  refresh(nodeIds: Iterable<string>): Set<string> {
    const keys = new Set<string>();
    for (const id of nodeIds) {
      for (const key of this.byNode.get(id) ?? []) keys.add(key);
      for (const pool of this.cluster.poolsByMember.get(id) ?? []) {
        for (const org of pool.organizationIds.length > 0 ? pool.organizationIds : [""]) {
          keys.add(org ? `egress/${pool.id}/${org}` : `egress/${pool.id}`);
        }
      }
      for (const role of this.cluster.rolesOf(id)) {
        for (const w of this.cluster.workloadsByRole.get(role) ?? []) keys.add(`service/${w.id}`);
      }
    }
    if (keys.size === 0) return keys;
    const before = this.snapshotRankings(keys);
    for (const key of keys) {
      const t = this.targets.get(key);
      if (!t) continue;
      for (const id of t.nodes.keys()) this.byNode.get(id)?.delete(key);
      t.nodes = new Map();
      if (t.kind === "pool") {
        for (const m of this.cluster.pools.get(t.id)?.members ?? []) {
          if (this.eligible(m.nodeId) && this.cluster.allows(m.nodeId, EGRESS_ROLE, t.organizationId)) {
            t.nodes.set(m.nodeId, m.weight);
          }
        }
      } else {
        const w = this.cluster.workloads.get(t.id);
        for (const id of w ? this.cluster.placement(w) : []) if (this.eligible(id)) t.nodes.set(id, 100);
      }
      for (const id of t.nodes.keys()) this.index(id, key);
      this.ranked.delete(key);
    }
    return this.diff(before, keys);
  }

  /** The target's best destinations for holders in `region`, best first. */
  ranking(key: string, region: string): string[] {
    let byRegion = this.ranked.get(key);
    if (!byRegion) this.ranked.set(key, (byRegion = new Map()));
    let list = byRegion.get(region);
    if (!list) {
      const t = this.targets.get(key);
      const entries = [...(t?.nodes ?? [])].map(([id, weight]) => {
        const c = this.peers.candidates.get(id)!;
        return { id, weight, rank: regionScore(region, c.region) + c.intrinsic };
      });
      entries.sort((a, b) => b.weight - a.weight || b.rank - a.rank || compareIds(a.id, b.id));
      list = entries.slice(0, LISTED_DESTINATIONS).map((e) => e.id);
      byRegion.set(region, list);
    }
    return list;
  }

  private eligible(id: string): boolean {
    return this.peers.candidates.get(id)?.excludedReason === "";
  }

  private index(nodeId: string, key: string): void {
    let keys = this.byNode.get(nodeId);
    if (!keys) this.byNode.set(nodeId, (keys = new Set()));
    keys.add(key);
  }

  /** The current rankings for the regions already asked for, to compare after a change. */
  private snapshotRankings(keys?: Set<string>): Map<string, Map<string, string>> {
    const out = new Map<string, Map<string, string>>();
    for (const [key, byRegion] of this.ranked) {
      if (keys && !keys.has(key)) continue;
      out.set(key, new Map([...byRegion].map(([region, list]) => [region, list.join(",")])));
    }
    return out;
  }

  private diff(before: Map<string, Map<string, string>>, keys?: Set<string>): Set<string> {
    const changed = new Set<string>();
    const candidates = keys ?? new Set([...before.keys(), ...this.targets.keys()]);
    for (const key of candidates) {
      const was = before.get(key);
      if (!was || !this.targets.has(key)) {
        changed.add(key);
        continue;
      }
      for (const [region, list] of was) {
        if (this.ranking(key, region).join(",") !== list) {
          changed.add(key);
          break;
        }
      }
    }
    return changed;
  }
}

/**
 * Organizations whose traffic a route holder carries, with "" for platform traffic. A relay carries
 * what its relay-node assignments allow (unscoped: every organization and the platform); an entry node
 * the organizations of its entry-node assignments (unscoped: every organization with something
 * reachable in the cluster). "all" = every organization and the platform.
 */
export function holderOrganizations(cluster: ClusterState, nodeId: string): Set<string> | "all" {
  const orgs = new Set<string>();
  if (cluster.holds(nodeId, RELAY_ROLE)) {
    const relay = cluster.organizationsFor(nodeId, RELAY_ROLE);
    if (!relay) return "all";
    for (const o of relay) orgs.add(o);
  }
  if (cluster.holds(nodeId, ENTRY_ROLE)) {
    for (const o of entryOrganizations(cluster, nodeId)) orgs.add(o);
  }
  return orgs;
}

/** Organizations whose clients an entry node accepts. */
export function entryOrganizations(cluster: ClusterState, nodeId: string): string[] {
  const scoped = cluster.organizationsFor(nodeId, ENTRY_ROLE);
  return scoped ? [...scoped].sort(compareIds) : cluster.organizations();
}

function carries(orgs: Set<string> | "all", organizationId: string): boolean {
  return orgs === "all" || orgs.has(organizationId);
}

export interface RouteResult {
  routes: RouteEntry[];
  /** Nodes the routes name (next hops and failovers); the snapshot carries their addresses. */
  contacts: Set<string>;
}

/**
 * Routes of one holder (relay or entry node) for the organizations it carries: to each target's best
 * destination for the holder's region (or none when the holder is itself a destination), failing over
 * to the next destinations, then to relays among the holder's peers that may carry the organization.
 * Everything comes from the holder's own cluster.
 */
export function computeRoutes(
  table: RouteTable,
  peers: ClusterPeers,
  holderId: string,
  selection: Selection,
): RouteResult {
  const cluster = table.cluster;
  const orgs = holderOrganizations(cluster, holderId);
  const region = peers.candidates.get(holderId)?.region ?? "";
  const routes: RouteEntry[] = [];
  const contacts = new Set<string>();
  const relays = selection.peers.filter((p) => p.info.kind === "relay").map((p) => p.info);
  const cost = (c: CandidateInfo | undefined) =>
    c ? Math.round((1 - peers.score(holderId, selection.nodeClass, c).total) * 1000) / 1000 : 1;

  for (const target of table.all()) {
    if (!carries(orgs, target.organizationId) || target.nodes.size === 0) continue;
    const ranked = table.ranking(target.key, region);
    const fallbacks = relays
      .filter((r) => !target.nodes.has(r.id) && cluster.allows(r.id, RELAY_ROLE, target.organizationId))
      .slice(0, MAX_RELAY_FALLBACKS)
      .map((r) => r.id);
    const self = target.nodes.has(holderId);
    const next = self ? "" : ranked[0]!;
    const failover = self
      ? ranked.filter((id) => id !== holderId).slice(0, MAX_FAILOVER)
      : [...ranked.slice(1), ...fallbacks].slice(0, MAX_FAILOVER);
    routes.push({
      id: target.key,
      destination:
        target.kind === "pool"
          ? { kind: "egressPool", id: target.id }
          : { kind: "serviceNode", id: self ? holderId : ranked[0]! },
      organizationId: target.organizationId,
      nextHopNodeId: next,
      failoverNodeIds: failover,
      cost: next ? cost(peers.candidates.get(next)) : 0,
    });
    if (next) contacts.add(next);
    for (const id of failover) contacts.add(id);
  }
  contacts.delete(holderId);
  return { routes, contacts };
}
