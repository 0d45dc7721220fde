import { Counter, Gauge, type Registry } from "prom-client";
import type { SnapshotEngine } from "./snapshot-engine.js";
import type { SnapshotHub } from "./snapshot-hub.js";
import type { SnapshotSigner } from "./snapshot-signer.js";

/** The router's own figures on /metrics, next to the platform's RPC metrics. */
export function routerMetrics(
  registry: Registry,
  sources: { engine: SnapshotEngine; hub: SnapshotHub; signer: SnapshotSigner },
): { published: Counter } {
  new Gauge({
    name: "fabric_router_watch_streams",
    help: "Open Watch streams on this replica.",
    registers: [registry],
    collect() {
      this.set(sources.hub.streams);
    },
  });
  new Gauge({
    name: "fabric_router_snapshots",
    help: "Node snapshots held (one per node and cluster).",
    registers: [registry],
    collect() {
      this.set(sources.engine.snapshotCount);
    },
  });
  new Gauge({
    name: "fabric_router_feed_version",
    help: "Registry change-feed version the model reflects.",
    registers: [registry],
    collect() {
      this.set(Number(sources.engine.version));
    },
  });
  new Gauge({
    name: "fabric_router_snapshot_signatures",
    help: "Snapshot signatures made since start (one per version and signer, shared by all its streams).",
    registers: [registry],
    collect() {
      this.set(sources.signer.signatures);
    },
  });
  const published = new Counter({
    name: "fabric_router_snapshot_versions_published_total",
    help: "New snapshot versions published.",
    registers: [registry],
  });
  return { published };
}
