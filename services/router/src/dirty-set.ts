/**
 * What a batch of registry changes touched, per cluster, collected between two recomputes (the
 * debounce window). The engine turns it into the set of node snapshots to rebuild.
 */
export interface ClusterDirt {
  /** Nodes whose own snapshot inputs changed (roles, workloads, pools, probes, membership). */
  self: Set<string>;
  /** Nodes whose attributes as a peer candidate may have changed (eligibility, load, roles, region). */
  candidates: Set<string>;
  /** Route inputs changed (pools, placements, assignments): every route holder is rebuilt. */
  routes: boolean;
  /** Rebuild every node of the cluster (after a relist). */
  full: boolean;
}

export class DirtySet {
  readonly clusters = new Map<string, ClusterDirt>();

  get empty(): boolean {
    return this.clusters.size === 0;
  }

  private of(clusterId: string): ClusterDirt {
    let dirt = this.clusters.get(clusterId);
    if (!dirt) {
      dirt = { self: new Set(), candidates: new Set(), routes: false, full: false };
      this.clusters.set(clusterId, dirt);
    }
    return dirt;
  }

  self(clusterId: string, nodeId: string): void {
    this.of(clusterId).self.add(nodeId);
  }

  /** The node changed as a candidate, and therefore also for itself. */
  candidate(clusterId: string, nodeId: string): void {
    const dirt = this.of(clusterId);
    dirt.self.add(nodeId);
    dirt.candidates.add(nodeId);
  }

  routes(clusterId: string): void {
    this.of(clusterId).routes = true;
  }

  full(clusterId: string): void {
    this.of(clusterId).full = true;
  }
}
