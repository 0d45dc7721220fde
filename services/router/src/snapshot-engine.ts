import type { ChangeEvent } from "@fabric/proto/fabric/registry/v1/changes_pb.js";
import { DirtySet, type ClusterDirt } from "./dirty-set.js";
import { FabricModel } from "./fabric-model.js";
import { ENTRY_ROLE, RELAY_ROLE } from "./node-class.js";
import { ClusterPeers } from "./peer-selection.js";
import { RouteTable, holderOrganizations } from "./routes.js";
import { buildSnapshotContent } from "./snapshot-builder.js";
import { appendVersion } from "./snapshot-encoding.js";
import type { PublishedSnapshot } from "./snapshot-signer.js";
import { snapshotKey } from "./snapshot-hub.js";

/** Above this share of a cluster's members changing as candidates, a batch recomputes the cluster whole. */
const FULL_RECOMPUTE_SHARE = 0.05;

export interface EngineOptions {
  /** How long changes are collected before affected snapshots are recomputed. */
  debounceMs: number;
  now?: () => number;
  /** A node's snapshot has a new version. */
  onPublish?: (key: string, snapshot: PublishedSnapshot) => void;
  /** A node's membership is gone: it has no snapshot any more. */
  onGone?: (key: string) => void;
}

export interface FlushStats {
  /** Snapshots rebuilt. */
  rebuilt: number;
  /** Of those, published with a new version (the content changed). */
  published: number;
}

/**
 * Turns the model into versioned per-node snapshots. Registry changes are applied to the model at
 * once and collected in a dirty set; after the debounce window only the affected nodes are rebuilt,
 * and a rebuilt snapshot gets a new version only when its content changed.
 *
 * Versions: a snapshot's version is the registry feed version its content reflects (the model's
 * version when it was built). The feed version only grows and is the same for every router replica,
 * so versions never go backwards across restarts or when an agent moves between replicas, with
 * nothing stored by the router.
 */
export class SnapshotEngine {
  private model = new FabricModel();
  private readonly clusters = new Map<string, ClusterRuntime>();
  private readonly published = new Map<string, PublishedSnapshot>();
  private dirty = new DirtySet();
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  /** True once a full list has been loaded: before that, nothing is served. */
  synced = false;

  constructor(private readonly options: EngineOptions) {
    this.now = options.now ?? Date.now;
  }

  get version(): bigint {
    return this.model.version;
  }

  get fabric(): FabricModel {
    return this.model;
  }

  /** Replaces the whole model (a full list from the registry) and recomputes every snapshot now. */
  load(model: FabricModel): FlushStats {
    this.model = model;
    this.clusters.clear();
    const dirty = this.dirty;
    for (const id of model.clusters.keys()) dirty.full(id);
    for (const p of this.published.values()) dirty.full(p.clusterId);
    this.synced = true;
    return this.flush();
  }

  /** Applies one feed change; the affected snapshots are recomputed after the debounce window. */
  apply(event: ChangeEvent): void {
    this.model.apply(event, this.dirty);
    this.schedule();
  }

  /** Marks the model as caught up to `version` (a `synced` after a resume). */
  advance(version: bigint): void {
    if (version > this.model.version) this.model.version = version;
  }

  current(clusterId: string, nodeId: string): PublishedSnapshot | undefined {
    return this.published.get(snapshotKey(clusterId, nodeId));
  }

  /** The peer selection state of a cluster, for Explain. */
  clusterPeers(clusterId: string): ClusterPeers {
    return this.runtimeOf(clusterId).peers;
  }

  get snapshotCount(): number {
    return this.published.size;
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    if (this.timer || this.dirty.empty) return;
    // A fixed window from the first change, so a steady stream of changes cannot postpone delivery.
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, this.options.debounceMs);
  }

  /** Recomputes what the collected changes affect, now. */
  flush(): FlushStats {
    clearTimeout(this.timer);
    this.timer = undefined;
    const dirty = this.dirty;
    this.dirty = new DirtySet();
    const stats: FlushStats = { rebuilt: 0, published: 0 };
    if (!this.synced) return stats;
    const now = this.now();
    for (const [clusterId, dirt] of dirty.clusters) {
      const runtime = this.runtimeOf(clusterId);
      const rebuild =
        dirt.full || this.tooManyChanges(runtime, dirt)
          ? this.everything(runtime, now)
          : this.affected(runtime, dirt, now);
      for (const nodeId of rebuild) {
        stats.rebuilt++;
        if (this.publish(runtime, nodeId, now)) stats.published++;
      }
    }
    return stats;
  }

  private tooManyChanges(runtime: ClusterRuntime, dirt: ClusterDirt): boolean {
    return dirt.candidates.size > Math.max(16, runtime.peers.cluster.members.size * FULL_RECOMPUTE_SHARE);
  }

  /** Every node of the cluster, with selection and route state rebuilt from scratch. */
  private everything(runtime: ClusterRuntime, now: number): Set<string> {
    runtime.peers.rebuild(now);
    runtime.table.rebuild();
    runtime.referencedBy.clear();
    runtime.refs.clear();
    const rebuild = new Set(runtime.peers.cluster.members.keys());
    for (const p of this.published.values())
      if (p.clusterId === runtime.peers.cluster.id) rebuild.add(p.nodeId);
    return rebuild;
  }

  /** The nodes whose snapshot a batch of changes can alter, found through the indexes. */
  private affected(runtime: ClusterRuntime, dirt: ClusterDirt, now: number): Set<string> {
    const { peers, table } = runtime;
    const cluster = peers.cluster;
    const rebuild = new Set(dirt.self);
    const update = peers.updateCandidates(dirt.candidates, now);
    // Whoever names a changed node (as a peer or a route hop) shows its new score or addresses.
    for (const id of update.changed) for (const n of runtime.referencedBy.get(id) ?? []) rebuild.add(n);
    if (update.changed.size > 0 || update.windowMoves.size > 0) {
      for (const n of peers.selectorsToTest(update)) {
        if (!rebuild.has(n) && peers.isAffected(n, update)) rebuild.add(n);
      }
    }
    const holders = [
      ...(cluster.roleHolders.get(RELAY_ROLE) ?? []),
      ...(cluster.roleHolders.get(ENTRY_ROLE) ?? []),
    ];
    if (dirt.routes) {
      // Pools or workloads themselves changed: every route and entry policy may change.
      table.rebuild();
      for (const h of holders) rebuild.add(h);
    } else {
      const changedTargets = table.refresh(new Set([...update.changed, ...dirt.self]));
      if (changedTargets.size > 0) {
        const orgs = new Set([...changedTargets].map((key) => table.organizationOf(key)));
        for (const h of holders) {
          const carried = holderOrganizations(cluster, h);
          if (carried === "all" || [...orgs].some((o) => o === undefined || carried.has(o))) rebuild.add(h);
        }
      }
    }
    return rebuild;
  }

  private runtimeOf(clusterId: string): ClusterRuntime {
    let runtime = this.clusters.get(clusterId);
    if (!runtime) {
      const peers = new ClusterPeers(this.model, this.model.cluster(clusterId));
      peers.rebuild(this.now());
      const table = new RouteTable(peers);
      table.rebuild();
      runtime = { peers, table, referencedBy: new Map(), refs: new Map() };
      this.clusters.set(clusterId, runtime);
    }
    return runtime;
  }

  /** Rebuilds one node's snapshot; true when it got a new version. */
  private publish(runtime: ClusterRuntime, nodeId: string, now: number): boolean {
    const clusterId = runtime.peers.cluster.id;
    const key = snapshotKey(clusterId, nodeId);
    const built = buildSnapshotContent(this.model, runtime.peers, runtime.table, nodeId);
    updateReferences(runtime, nodeId, built?.refs);
    const previous = this.published.get(key);
    if (!built) {
      if (previous) {
        this.published.delete(key);
        this.options.onGone?.(key);
      }
      return false;
    }
    const content = built.content;
    if (previous && sameBytes(previous.bytes, previous.contentLength, content)) return false;
    // The feed has not moved since the last version: keep it (versions name feed positions).
    if (previous && this.model.version <= previous.version) return false;
    const published: PublishedSnapshot = {
      nodeId,
      clusterId,
      version: this.model.version,
      bytes: appendVersion(content, this.model.version, now),
      contentLength: content.length,
    };
    this.published.set(key, published);
    this.options.onPublish?.(key, published);
    return true;
  }
}

/** One cluster's derived state. */
interface ClusterRuntime {
  peers: ClusterPeers;
  table: RouteTable;
  /** Node → nodes whose snapshots name it (as a peer or a route hop). */
  referencedBy: Map<string, Set<string>>;
  /** Node → the nodes its snapshot names. */
  refs: Map<string, Set<string>>;
}

function updateReferences(runtime: ClusterRuntime, nodeId: string, refs: Set<string> | undefined): void {
  const previous = runtime.refs.get(nodeId);
  // Usually a rebuilt snapshot names the same nodes (a peer's score moved): the index stays as it is,
  // without touching the large reverse sets of popular peers.
  if (previous && refs && sameMembers(previous, refs)) return;
  for (const id of previous ?? []) {
    const by = runtime.referencedBy.get(id);
    by?.delete(nodeId);
    if (by?.size === 0) runtime.referencedBy.delete(id);
  }
  if (!refs || refs.size === 0) {
    runtime.refs.delete(nodeId);
    return;
  }
  runtime.refs.set(nodeId, refs);
  for (const id of refs) {
    let by = runtime.referencedBy.get(id);
    if (!by) runtime.referencedBy.set(id, (by = new Set()));
    by.add(nodeId);
  }
}

function sameMembers(a: Set<string>, b: Set<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

function sameBytes(bytes: Uint8Array, length: number, other: Uint8Array): boolean {
  if (length !== other.length) return false;
  return Buffer.from(bytes.buffer, bytes.byteOffset, length).equals(other);
}
