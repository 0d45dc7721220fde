import { fileURLToPath } from "node:url";
import { z } from "zod";
import { refusalAuditorFor, setting, type ServiceDefinition } from "@fabric/platform";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { followRegistryChanges } from "./registry-feed.js";
import { routerMetrics } from "./router-metrics.js";
import { routerService } from "./router-rpc.js";
import { SnapshotEngine } from "./snapshot-engine.js";
import { GONE, SnapshotHub } from "./snapshot-hub.js";
import { SnapshotSigner } from "./snapshot-signer.js";

/** Router settings on top of the platform's (FABRIC_<NAME> in the environment, or the YAML file). */
export const routerSettings = {
  /** The registry's mTLS gRPC URL, whose WatchChanges feeds the model (FABRIC_REGISTRY_URL). */
  registryUrl: setting.url(),
  /** How long registry changes are collected before affected snapshots are recomputed (FABRIC_DEBOUNCE_MS). */
  debounceMs: z.coerce.number().int().min(0).max(10_000).default(75),
  /** Most excluded cluster members one Explain answer lists (FABRIC_EXPLAIN_EXCLUDED_LIMIT). */
  explainExcludedLimit: z.coerce.number().int().min(0).max(10_000).default(100),
};

/**
 * The router: follows the registry's change feed into an in-memory model, selects peers and routes,
 * and streams each node its signed, versioned, need-to-know snapshot. It keeps no state of its own in
 * Postgres beyond the platform's audit log (refused Watch and Explain attempts): snapshot versions are
 * registry feed versions, so replicas agree and restarts never go backwards.
 */
export const routerDefinition: ServiceDefinition<typeof routerSettings> = {
  name: "router",
  defaults: { grpcPort: 7403, httpPort: 7413 },
  settings: routerSettings,
  migrationsDir: fileURLToPath(new URL("../migrations", import.meta.url)),
  build(ctx) {
    const hub = new SnapshotHub();
    const signer = new SnapshotSigner(() => ctx.identity.current());
    const engine: SnapshotEngine = new SnapshotEngine({
      debounceMs: ctx.config.debounceMs,
      onPublish: (key, snapshot) => {
        metrics.published.inc();
        hub.deliver(key, snapshot);
      },
      onGone: (key) => hub.deliver(key, GONE),
    });
    const metrics = routerMetrics(ctx.metrics, { engine, hub, signer });
    const registry = ctx.client(RegistryService, ctx.config.registryUrl, "registry");
    let feed: Promise<void> | undefined;
    let loaded!: () => void;
    const ready = new Promise<void>((resolve) => (loaded = resolve));
    return {
      // Ready once the first registry list is loaded: before that Watch and Explain could only refuse.
      ready,
      services: [
        routerService({
          engine,
          hub,
          signer,
          // Through the service's one refusal auditor: refused callers never take the pool.
          recordRefusal: ({ outcome: refused, ...event }) => {
            void refused; // always "refused": the auditor records every event as one
            return refusalAuditorFor(ctx.pool, ctx.logger).recordAndWait(event);
          },
          explainExcludedLimit: ctx.config.explainExcludedLimit,
          audit: ctx.audit,
        }),
      ],
      start() {
        feed = followRegistryChanges(registry, engine, {
          logger: ctx.logger,
          signal: ctx.signal,
          onSynced: () => loaded(),
        });
      },
      async stop() {
        await feed;
        engine.stop();
      },
    };
  },
};
