import { fileURLToPath } from "node:url";
import { z } from "zod";
import { ConfigError, serve, setting, type ServiceDefinition } from "@fabric/platform";
import { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { ChangeFeed } from "./change-feed.js";
import { clusterHandlers } from "./clusters.js";
import type { Registry } from "./context.js";
import { egressPoolHandlers } from "./egress-pools.js";
import { startLivenessSweep } from "./liveness.js";
import { Model } from "./model.js";
import { nodeGroupHandlers } from "./node-groups.js";
import { nodeHandlers } from "./nodes.js";
import { orgViewHandlers } from "./org-views.js";
import { REGISTRY_POLICY } from "./policy.js";
import { registerNodeHandlers } from "./register-node.js";
import { ReportWriter } from "./report-writer.js";
import { startRetention } from "./retention.js";
import { roleHandlers } from "./roles.js";
import { sessionHandlers } from "./session.js";
import { SessionHub } from "./session-hub.js";
import { watchChangesHandlers } from "./watch-changes.js";
import { workloadHandlers } from "./workloads.js";

const HOUR = 3_600_000;

/**
 * Registry settings on top of the platform's (FABRIC_<NAME> in the environment, or the YAML file).
 * FABRIC_CA_URL (a platform setting) is required: the registry follows the CA's revocations and has it
 * revoke nodes.
 */
export const registrySettings = {
  /** FABRIC_HEARTBEAT_INTERVAL_MS: how often agents heartbeat; three missed = offline. */
  heartbeatIntervalMs: setting.durationMs(10_000),
  /** FABRIC_REPORT_FLUSH_MS: how long a Session report waits for its batch. */
  reportFlushMs: setting.durationMs(10),
  /** FABRIC_REPORT_BATCH_MAX: Session reports per transaction at most. */
  reportBatchMax: z.coerce.number().int().min(1).max(20_000).default(2_000),
  /** FABRIC_CHANGE_COALESCE_MS: load-only updates of a node, status or probe pair reach the feed at most this often. */
  changeCoalesceMs: setting.durationMs(30_000),
  /** FABRIC_REPORT_RETENTION_MS: how long the append-only report log keeps a report. */
  reportRetentionMs: setting.durationMs(7 * 24 * HOUR),
  /** FABRIC_CHANGE_RETENTION_MS: how long WatchChanges can resume from a version. */
  changeRetentionMs: setting.durationMs(24 * HOUR),
  /** FABRIC_RETENTION_SWEEP_MS: how often expired reports and changes are deleted. */
  retentionSweepMs: setting.durationMs(60_000),
  /** FABRIC_FEED_POLL_MS: safety-net poll of the change feed besides LISTEN/NOTIFY. */
  feedPollMs: setting.durationMs(1_000),
  /** FABRIC_FEED_MEMORY_CHANGES: recent changes kept in memory for resuming watchers. */
  feedMemoryChanges: z.coerce.number().int().min(0).max(1_000_000).default(20_000),
};

export const registryService: ServiceDefinition<typeof registrySettings> = {
  name: "registry",
  defaults: { grpcPort: 7402, httpPort: 7412 },
  settings: registrySettings,
  migrationsDir: fileURLToPath(new URL("../migrations", import.meta.url)),
  async build(ctx) {
    const { config, pool, logger } = ctx;
    if (!config.caUrl) {
      throw new ConfigError([
        "FABRIC_CA_URL: required: the registry follows the CA's revocations and has it revoke nodes",
      ]);
    }
    const model = new Model();
    const feed = new ChangeFeed({
      pool,
      databaseUrl: config.databaseUrl,
      model,
      logger,
      pollMs: config.feedPollMs,
      memoryChanges: config.feedMemoryChanges,
      maxWatcherBacklog: 100_000,
    });
    await feed.start();
    const sessions = new SessionHub();
    model.onChange(sessions.onChange);
    const reports = new ReportWriter({
      pool,
      logger,
      metrics: ctx.metrics,
      flushMs: config.reportFlushMs,
      maxBatch: config.reportBatchMax,
      coalesceMs: config.changeCoalesceMs,
    });
    const key = await pool.query<{ key: Buffer }>(
      "SELECT key FROM view_keys WHERE name = 'org-entry-points'",
    );
    const r: Registry = {
      pool,
      model,
      feed,
      sessions,
      reports,
      logger,
      ca: ctx.client(CaService, config.caUrl, "ca"),
      viewKey: key.rows[0]!.key,
    };
    const stops: (() => void)[] = [];
    return {
      services: [
        serve(
          RegistryService,
          {
            ...clusterHandlers(r),
            ...nodeGroupHandlers(r),
            ...registerNodeHandlers(r),
            ...nodeHandlers(r),
            ...roleHandlers(r),
            ...workloadHandlers(r),
            ...egressPoolHandlers(r),
            ...ctx.audit,
            ...orgViewHandlers(r),
            ...sessionHandlers(r),
            ...watchChangesHandlers(r),
          },
          REGISTRY_POLICY,
        ),
      ],
      start() {
        stops.push(startLivenessSweep({ pool, logger, heartbeatIntervalMs: config.heartbeatIntervalMs }));
        stops.push(
          startRetention({
            pool,
            logger,
            intervalMs: config.retentionSweepMs,
            reportRetentionMs: config.reportRetentionMs,
            changeRetentionMs: config.changeRetentionMs,
          }),
        );
      },
      async stop() {
        for (const stop of stops) stop();
        sessions.closeAll();
        await reports.close();
        await feed.stop();
      },
    };
  },
};
