import { timestampMs, durationMs } from "@bufbuild/protobuf/wkt";
import type { ChangeEvent } from "@fabric/proto/fabric/registry/v1/changes_pb.js";
import type { EgressPool } from "@fabric/proto/fabric/registry/v1/egress_pb.js";
import {
  MembershipState,
  NodeState,
  type Membership,
  type Node,
  type RoleAssignment,
} from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import { NodeHealth } from "@fabric/proto/fabric/registry/v1/session_pb.js";
import type { Workload } from "@fabric/proto/fabric/registry/v1/workload_pb.js";
import type { DirtySet } from "./dirty-set.js";

/**
 * The router's in-memory picture of the fabric, built only from the registry's change feed. It holds
 * exactly what peer selection, routes and snapshots need, indexed by cluster so that nothing computed
 * for one cluster can reach into another.
 */

export interface NodeRecord {
  id: string;
  revoked: boolean;
  online: boolean;
  health: NodeHealth;
  region: string;
  /** Mesh addresses (`host:port`), in order of preference; empty for nodes that only dial out. */
  addresses: string[];
  /** Labelled `thin=true` by its operator (a mobile or constrained host). */
  thinLabel: boolean;
  /** max(cpu, memory) of the last heartbeat, 0.0-1.0; undefined before the first. */
  load: number | undefined;
  /** 32-bit hash of the id, the node's half of the diversity factor. */
  hash: number;
}

export interface MembershipRecord {
  id: string;
  nodeId: string;
  clusterId: string;
  state: MembershipState;
  joinedAtMs: number | undefined;
}

export interface AssignmentRecord {
  id: string;
  nodeId: string;
  clusterId: string;
  role: string;
  /** Empty = every organization. */
  organizationId: string;
}

export interface WorkloadRecord {
  id: string;
  clusterId: string;
  role: string;
  organizationId: string;
  nodeIds: string[];
  workload: Workload;
}

export interface PoolMemberRecord {
  nodeId: string;
  weight: number;
}

export interface PoolRecord {
  id: string;
  clusterId: string;
  /** Organizations that may route through the pool; empty = platform-internal. */
  organizationIds: string[];
  members: PoolMemberRecord[];
}

export interface ProbeRecord {
  latencyMs: number | undefined;
  loss: number;
  failures: number;
}

/** Everything about one cluster. */
export class ClusterState {
  /** Memberships by node id. */
  readonly members = new Map<string, MembershipRecord>();
  /** Role assignments by node id. */
  readonly assignments = new Map<string, AssignmentRecord[]>();
  /** Node ids holding each role (any organization scope). */
  readonly roleHolders = new Map<string, Set<string>>();
  readonly workloads = new Map<string, WorkloadRecord>();
  readonly workloadsByRole = new Map<string, Set<WorkloadRecord>>();
  readonly pools = new Map<string, PoolRecord>();
  readonly poolsByMember = new Map<string, Set<PoolRecord>>();
  /** Probe figures: from node → to node → stats. */
  readonly probes = new Map<string, Map<string, ProbeRecord>>();
  /** Reverse probe index: to node → nodes that probed it. */
  readonly probedBy = new Map<string, Set<string>>();

  constructor(readonly id: string) {}

  rolesOf(nodeId: string): string[] {
    const roles = new Set((this.assignments.get(nodeId) ?? []).map((a) => a.role));
    return [...roles].sort();
  }

  holds(nodeId: string, role: string): boolean {
    return this.roleHolders.get(role)?.has(nodeId) ?? false;
  }

  /**
   * Whether the node may act in `role` for `organizationId`: an unscoped assignment allows every
   * organization; a scoped one only its own. Platform traffic and platform workloads (organization
   * empty) accept any assignment of the role, as the registry's placement rule does.
   */
  allows(nodeId: string, role: string, organizationId: string): boolean {
    for (const a of this.assignments.get(nodeId) ?? []) {
      if (a.role !== role) continue;
      if (organizationId === "" || a.organizationId === "" || a.organizationId === organizationId)
        return true;
    }
    return false;
  }

  /** Organizations a holder of `role` serves: undefined = every organization (an unscoped assignment). */
  organizationsFor(nodeId: string, role: string): Set<string> | undefined {
    const orgs = new Set<string>();
    for (const a of this.assignments.get(nodeId) ?? []) {
      if (a.role !== role) continue;
      if (a.organizationId === "") return undefined;
      orgs.add(a.organizationId);
    }
    return orgs;
  }

  isActiveMember(nodeId: string): boolean {
    return this.members.get(nodeId)?.state === MembershipState.ACTIVE;
  }

  /** Placements computed since the last membership, assignment or workload change in the cluster. */
  private readonly placements = new Map<WorkloadRecord, string[]>();

  /** Forgets cached placements; the model calls it on every change that can move a workload. */
  placementsChanged(): void {
    this.placements.clear();
  }

  /** Active members that run the workload: they hold its role for its organization, and are listed when it pins nodes. */
  placement(w: WorkloadRecord): string[] {
    let nodes = this.placements.get(w);
    if (!nodes) {
      nodes = this.computePlacement(w);
      this.placements.set(w, nodes);
    }
    return nodes;
  }

  private computePlacement(w: WorkloadRecord): string[] {
    const holders = this.roleHolders.get(w.role);
    if (!holders) return [];
    const pinned = w.nodeIds.length > 0 ? new Set(w.nodeIds) : undefined;
    const out: string[] = [];
    for (const nodeId of holders) {
      if (pinned && !pinned.has(nodeId)) continue;
      if (!this.isActiveMember(nodeId) || !this.allows(nodeId, w.role, w.organizationId)) continue;
      out.push(nodeId);
    }
    return out.sort();
  }

  /** Workloads placed on the node, by id. */
  workloadsOf(nodeId: string): WorkloadRecord[] {
    if (!this.isActiveMember(nodeId)) return [];
    const out: WorkloadRecord[] = [];
    for (const role of this.rolesOf(nodeId)) {
      for (const w of this.workloadsByRole.get(role) ?? []) {
        if (w.nodeIds.length > 0 && !w.nodeIds.includes(nodeId)) continue;
        if (this.allows(nodeId, w.role, w.organizationId)) out.push(w);
      }
    }
    return out.sort((a, b) => compareIds(a.id, b.id));
  }

  /** Organizations with something reachable in this cluster: a visible pool or a workload. */
  organizations(): string[] {
    const orgs = new Set<string>();
    for (const p of this.pools.values()) for (const o of p.organizationIds) orgs.add(o);
    for (const w of this.workloads.values()) if (w.organizationId) orgs.add(w.organizationId);
    return [...orgs].sort(compareIds);
  }

  probe(from: string, to: string): ProbeRecord | undefined {
    return this.probes.get(from)?.get(to);
  }
}

/** Plain code-unit order: the same everywhere, unlike localeCompare. */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** FNV-1a over the id's UTF-16 code units, finished with a murmur-style mix. */
export function idHash(id: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    h ^= id.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}

export class FabricModel {
  /** The registry feed version this model reflects (0 before the first list). */
  version = 0n;
  readonly nodes = new Map<string, NodeRecord>();
  readonly clusters = new Map<string, ClusterState>();
  private readonly membershipsById = new Map<string, MembershipRecord>();
  private readonly assignmentsById = new Map<string, AssignmentRecord>();
  private readonly workloadsById = new Map<string, WorkloadRecord>();
  private readonly poolsById = new Map<string, PoolRecord>();
  /** Clusters each node is a member of (any membership state). */
  private readonly nodeClusters = new Map<string, Set<string>>();

  cluster(id: string): ClusterState {
    let c = this.clusters.get(id);
    if (!c) {
      c = new ClusterState(id);
      this.clusters.set(id, c);
    }
    return c;
  }

  clustersOf(nodeId: string): string[] {
    return [...(this.nodeClusters.get(nodeId) ?? [])].sort(compareIds);
  }

  /** Applies one feed event and records in `dirty` which snapshots it may change. */
  apply(event: ChangeEvent, dirty: DirtySet): void {
    const { entity } = event;
    switch (entity.case) {
      case "node":
        if (event.deleted) this.deleteNode(entity.value.id, dirty);
        else this.putNode(entity.value, dirty);
        break;
      case "membership":
        if (event.deleted) this.deleteMembership(entity.value.id, dirty);
        else this.putMembership(entity.value, dirty);
        break;
      case "roleAssignment":
        if (event.deleted) this.deleteAssignment(entity.value.id, dirty);
        else this.putAssignment(entity.value, dirty);
        break;
      case "workload":
        if (event.deleted) this.deleteWorkload(entity.value.spec?.id ?? "", dirty);
        else this.putWorkload(entity.value, dirty);
        break;
      case "egressPool":
        if (event.deleted) this.deletePool(entity.value.id, dirty);
        else this.putPool(entity.value, dirty);
        break;
      case "probeStats": {
        const s = entity.value;
        const cluster = this.cluster(s.clusterId);
        if (event.deleted) removeProbe(cluster, s.fromNodeId, s.toNodeId);
        else {
          setProbe(cluster, s.fromNodeId, s.toNodeId, {
            latencyMs: s.latency ? durationMs(s.latency) : undefined,
            loss: s.lossRatio,
            failures: s.recentFailures,
          });
        }
        dirty.self(s.clusterId, s.fromNodeId);
        dirty.self(s.clusterId, s.toNodeId);
        break;
      }
      case undefined:
        break;
    }
    if (event.version > this.version) this.version = event.version;
  }

  private touchNode(nodeId: string, dirty: DirtySet): void {
    for (const clusterId of this.nodeClusters.get(nodeId) ?? []) dirty.candidate(clusterId, nodeId);
  }

  private putNode(n: Node, dirty: DirtySet): void {
    const facts = n.facts;
    const hb = n.lastHeartbeat;
    this.nodes.set(n.id, {
      id: n.id,
      revoked: n.state === NodeState.REVOKED,
      online: n.online,
      health: n.health ?? NodeHealth.UNSPECIFIED,
      region: facts?.region ?? "",
      addresses: [...(facts?.addresses ?? [])],
      thinLabel: facts?.labels.thin === "true",
      load: hb ? Math.max(hb.cpuRatio, hb.memoryRatio) : undefined,
      hash: idHash(n.id),
    });
    for (const m of n.memberships) this.putMembership(m, dirty);
    this.touchNode(n.id, dirty);
  }

  private deleteNode(id: string, dirty: DirtySet): void {
    this.touchNode(id, dirty);
    this.nodes.delete(id);
  }

  private putMembership(m: Membership, dirty: DirtySet): void {
    const record: MembershipRecord = {
      id: m.id,
      nodeId: m.nodeId,
      clusterId: m.clusterId,
      state: m.state,
      joinedAtMs: m.joinedAt ? timestampMs(m.joinedAt) : undefined,
    };
    const previous = this.membershipsById.get(m.id);
    // Node events repeat the node's memberships; only a real change counts.
    if (previous && sameMembership(previous, record)) return;
    if (previous) this.dropMembership(previous);
    this.membershipsById.set(m.id, record);
    const cluster = this.cluster(m.clusterId);
    cluster.members.set(m.nodeId, record);
    cluster.placementsChanged();
    let clusters = this.nodeClusters.get(m.nodeId);
    if (!clusters) this.nodeClusters.set(m.nodeId, (clusters = new Set()));
    clusters.add(m.clusterId);
    dirty.candidate(m.clusterId, m.nodeId);
  }

  private deleteMembership(id: string, dirty: DirtySet): void {
    const record = this.membershipsById.get(id);
    if (!record) return;
    this.dropMembership(record);
    dirty.candidate(record.clusterId, record.nodeId);
  }

  private dropMembership(record: MembershipRecord): void {
    this.membershipsById.delete(record.id);
    const cluster = this.cluster(record.clusterId);
    if (cluster.members.get(record.nodeId) === record) cluster.members.delete(record.nodeId);
    cluster.placementsChanged();
    this.nodeClusters.get(record.nodeId)?.delete(record.clusterId);
  }

  private putAssignment(a: RoleAssignment, dirty: DirtySet): void {
    const previous = this.assignmentsById.get(a.id);
    if (previous) this.dropAssignment(previous, dirty);
    const record: AssignmentRecord = {
      id: a.id,
      nodeId: a.nodeId,
      clusterId: a.clusterId,
      role: a.role,
      organizationId: a.organizationId,
    };
    this.assignmentsById.set(a.id, record);
    const cluster = this.cluster(a.clusterId);
    const list = cluster.assignments.get(a.nodeId) ?? [];
    list.push(record);
    cluster.assignments.set(a.nodeId, list);
    let holders = cluster.roleHolders.get(a.role);
    if (!holders) cluster.roleHolders.set(a.role, (holders = new Set()));
    holders.add(a.nodeId);
    cluster.placementsChanged();
    dirty.candidate(a.clusterId, a.nodeId);
  }

  private deleteAssignment(id: string, dirty: DirtySet): void {
    const record = this.assignmentsById.get(id);
    if (record) this.dropAssignment(record, dirty);
  }

  private dropAssignment(record: AssignmentRecord, dirty: DirtySet): void {
    this.assignmentsById.delete(record.id);
    const cluster = this.cluster(record.clusterId);
    const list = (cluster.assignments.get(record.nodeId) ?? []).filter((a) => a.id !== record.id);
    if (list.length > 0) cluster.assignments.set(record.nodeId, list);
    else cluster.assignments.delete(record.nodeId);
    if (!list.some((a) => a.role === record.role)) {
      const holders = cluster.roleHolders.get(record.role);
      holders?.delete(record.nodeId);
      if (holders?.size === 0) cluster.roleHolders.delete(record.role);
    }
    cluster.placementsChanged();
    dirty.candidate(record.clusterId, record.nodeId);
  }

  private putWorkload(w: Workload, dirty: DirtySet): void {
    const spec = w.spec;
    if (!spec) return;
    const previous = this.workloadsById.get(spec.id);
    if (previous) this.dropWorkload(previous, dirty);
    const record: WorkloadRecord = {
      id: spec.id,
      clusterId: spec.clusterId,
      role: spec.role,
      organizationId: spec.organizationId,
      nodeIds: [...spec.nodeIds],
      workload: w,
    };
    this.workloadsById.set(record.id, record);
    const cluster = this.cluster(record.clusterId);
    cluster.workloads.set(record.id, record);
    let byRole = cluster.workloadsByRole.get(record.role);
    if (!byRole) cluster.workloadsByRole.set(record.role, (byRole = new Set()));
    byRole.add(record);
    cluster.placementsChanged();
    for (const nodeId of cluster.placement(record)) dirty.self(record.clusterId, nodeId);
    dirty.routes(record.clusterId);
  }

  private deleteWorkload(id: string, dirty: DirtySet): void {
    const record = this.workloadsById.get(id);
    if (record) this.dropWorkload(record, dirty);
  }

  private dropWorkload(record: WorkloadRecord, dirty: DirtySet): void {
    const cluster = this.cluster(record.clusterId);
    for (const nodeId of cluster.placement(record)) dirty.self(record.clusterId, nodeId);
    this.workloadsById.delete(record.id);
    cluster.workloads.delete(record.id);
    const byRole = cluster.workloadsByRole.get(record.role);
    byRole?.delete(record);
    if (byRole?.size === 0) cluster.workloadsByRole.delete(record.role);
    cluster.placementsChanged();
    dirty.routes(record.clusterId);
  }

  private putPool(p: EgressPool, dirty: DirtySet): void {
    const previous = this.poolsById.get(p.id);
    if (previous) this.dropPool(previous, dirty);
    const record: PoolRecord = {
      id: p.id,
      clusterId: p.clusterId,
      organizationIds: [...new Set(p.organizationIds)].sort(compareIds),
      members: p.members.map((m) => ({ nodeId: m.nodeId, weight: m.weight || 100 })),
    };
    this.poolsById.set(record.id, record);
    const cluster = this.cluster(record.clusterId);
    cluster.pools.set(record.id, record);
    for (const m of record.members) {
      let pools = cluster.poolsByMember.get(m.nodeId);
      if (!pools) cluster.poolsByMember.set(m.nodeId, (pools = new Set()));
      pools.add(record);
      dirty.self(record.clusterId, m.nodeId);
    }
    dirty.routes(record.clusterId);
  }

  private deletePool(id: string, dirty: DirtySet): void {
    const record = this.poolsById.get(id);
    if (record) this.dropPool(record, dirty);
  }

  private dropPool(record: PoolRecord, dirty: DirtySet): void {
    this.poolsById.delete(record.id);
    const cluster = this.cluster(record.clusterId);
    cluster.pools.delete(record.id);
    for (const m of record.members) {
      const pools = cluster.poolsByMember.get(m.nodeId);
      pools?.delete(record);
      if (pools?.size === 0) cluster.poolsByMember.delete(m.nodeId);
      dirty.self(record.clusterId, m.nodeId);
    }
    dirty.routes(record.clusterId);
  }
}

function sameMembership(a: MembershipRecord, b: MembershipRecord): boolean {
  return (
    a.nodeId === b.nodeId &&
    a.clusterId === b.clusterId &&
    a.state === b.state &&
    a.joinedAtMs === b.joinedAtMs
  );
}

function setProbe(cluster: ClusterState, from: string, to: string, record: ProbeRecord): void {
  let row = cluster.probes.get(from);
  if (!row) cluster.probes.set(from, (row = new Map()));
  row.set(to, record);
  let back = cluster.probedBy.get(to);
  if (!back) cluster.probedBy.set(to, (back = new Set()));
  back.add(from);
}

function removeProbe(cluster: ClusterState, from: string, to: string): void {
  const row = cluster.probes.get(from);
  row?.delete(to);
  if (row?.size === 0) cluster.probes.delete(from);
  const back = cluster.probedBy.get(to);
  back?.delete(from);
  if (back?.size === 0) cluster.probedBy.delete(to);
}
