import { toBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { transaction, type Logger, type Pool } from "@fabric/platform";
import type { SessionRequest } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import {
  HeartbeatSchema,
  ProbeReportSchema,
  WorkloadStatusReportSchema,
  type Heartbeat,
  type ProbeReport,
  type WorkloadStatusReport,
} from "@fabric/proto/fabric/registry/v1/session_pb.js";
import { Counter, Histogram, type Registry as Metrics } from "prom-client";
import { ChangeSet, writeChanges } from "./changes.js";
import { isEntityKind, probeKey, workloadStatusKey } from "./entities.js";

/** One report from a node's Session, as received. */
export interface Report {
  nodeId: string;
  clusterId: string;
  seq: bigint;
  receivedAt: Date;
  payload: Exclude<SessionRequest["payload"], { case: undefined }>;
  /**
   * Why the Session refused the report's content (e.g. the status of a workload not placed on the node):
   * it is acknowledged in its turn and counted, but nothing of it is written.
   */
  refused?: string;
}

export interface ReportWriterOptions {
  pool: Pool;
  logger: Logger;
  metrics: Metrics;
  /** How long the first report of a batch waits for company before the batch is written. */
  flushMs: number;
  /** Reports per transaction at most. */
  maxBatch: number;
  /** A latest-state row that changed only in load figures reaches the change feed at most this often. */
  coalesceMs: number;
}

/** Told once the report's batch committed (no argument), or failed (the error). */
export type Durable = (err?: unknown) => void;

interface Pending {
  report: Report;
  done: Durable;
}

// Smoothing of probe figures: each window moves the stored value this far toward the new one.
const PROBE_ALPHA = 0.3;

/**
 * Group commit for Session reports. Reports queue up; a batch is written when the first one has waited
 * flushMs or maxBatch are queued, as one transaction holding one statement (BATCH_SQL): every report
 * into the append-only log, and the latest state per node, per workload and node, and per probed pair,
 * each upserted once per batch from unnest() arrays. While a batch commits the next one gathers, so
 * under load batches grow instead of transactions multiplying. A report's promise resolves only after
 * its batch committed: that is when the Session acknowledges it.
 */
export class ReportWriter {
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing = false;
  private readonly batchSize: Histogram;
  private readonly flushSeconds: Histogram;
  private readonly written: Counter;
  private readonly refused: Counter;

  constructor(private readonly options: ReportWriterOptions) {
    this.batchSize = new Histogram({
      name: "fabric_registry_report_batch_size",
      help: "Session reports written per transaction (group commit).",
      buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000],
      registers: [options.metrics],
    });
    this.flushSeconds = new Histogram({
      name: "fabric_registry_report_flush_seconds",
      help: "Time to write and commit one batch of Session reports.",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [options.metrics],
    });
    this.written = new Counter({
      name: "fabric_registry_reports_total",
      help: "Session reports durably written, by kind.",
      labelNames: ["kind"],
      registers: [options.metrics],
    });
    this.refused = new Counter({
      name: "fabric_registry_reports_refused_total",
      help: "Session reports acknowledged but not written because they reached outside the node's placement, by kind and reason.",
      labelNames: ["kind", "reason"],
      registers: [options.metrics],
    });
  }

  /** Queues a report; `done` is called once it is durable (a callback, not a promise: thousands a second). */
  submit(report: Report, done: Durable): void {
    this.queue.push({ report, done });
    if (this.queue.length >= this.options.maxBatch) void this.flush();
    else if (!this.timer && !this.flushing) {
      this.timer = setTimeout(() => void this.flush(), this.options.flushMs);
    }
  }

  /** Writes whatever is queued; resolves when the queue is empty. */
  async close(): Promise<void> {
    clearTimeout(this.timer);
    while (this.flushing) await new Promise((r) => setTimeout(r, 5));
    await this.flush();
  }

  private async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, this.options.maxBatch);
        const accepted = batch.filter((p) => p.report.refused === undefined);
        const started = process.hrtime.bigint();
        try {
          // Refused reports ride in the queue only so their acknowledgement keeps its place in order.
          if (accepted.length > 0) {
            await this.writeRetrying(accepted.map((p) => p.report));
            this.batchSize.observe(accepted.length);
            this.flushSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
          }
          for (const { report } of batch) {
            if (report.refused === undefined) this.written.inc({ kind: report.payload.case });
            else this.refused.inc({ kind: report.payload.case, reason: report.refused });
          }
          for (const p of batch) p.done();
        } catch (err) {
          this.options.logger.warn(
            { err: (err as Error).message, reports: batch.length },
            "report batch not written",
          );
          for (const p of batch) p.done(err);
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  /** A deadlock with an admin change (40P01) or a serialization failure is retried, not reported. */
  private async writeRetrying(batch: Report[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.write(batch);
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (attempt >= 3 || (code !== "40P01" && code !== "40001")) throw err;
      }
    }
  }

  private async write(batch: Report[]): Promise<void> {
    const changes = new ChangeSet();
    await transaction(this.options.pool, async (tx) => {
      const { rows } = await tx.query<{
        kind: string;
        key: string;
        came_online: boolean;
        cluster_id: string;
      }>(BATCH_SQL, batchParams(batch, this.options.coalesceMs));
      for (const row of rows) {
        if (!isEntityKind(row.kind)) continue;
        changes.touch(row.kind, row.key);
        if (row.came_online) {
          const nodeId = row.key.split("/")[0]!;
          tx.audit({
            actorId: nodeId,
            actorKind: "node",
            action: "node.online",
            targetType: "node",
            targetId: nodeId,
            clusterId: row.cluster_id,
            outcome: "success",
          });
        }
      }
      await writeChanges(tx, changes);
    });
  }
}

/**
 * One statement per batch, so a batch costs one round trip besides BEGIN and COMMIT. Each latest-state
 * table is read with its rows locked (in key order, as every writer of them does), the new values are
 * computed against the locked rows, and the rows are upserted. A row reaches the change feed (its
 * `emitted_at` becomes now) when something besides load changed, or when its last feed entry is older
 * than the coalescing interval; the final SELECT names the entities to capture in the feed.
 *
 *   $1-$7   the log: receive time (ms), node, cluster, seq, kind, payload length, payloads concatenated
 *   $8-$15  heartbeats, last per node and cluster: node, health, heartbeat length, agent version, snapshot
 *           version, addresses (JSON; empty = unchanged), cluster, heartbeats concatenated
 *   $16-$17 every (node, cluster) that reported: memberships' last_seen_at
 *   $18-$26 workload status, last per workload and node
 *   $27-$37 probes folded per pair: decay and addend of the smoothed latency and loss, their first
 *           values (see foldProbes), probes counted, and the no-answer windows as JSON arrays of times
 *   $38     the coalescing interval (ms)
 */
const BATCH_SQL = `
WITH log AS (
  INSERT INTO report_log (received_at, node_id, cluster_id, seq, kind, payload)
  SELECT to_timestamp(at / 1000.0), node_id, cluster_id, seq, kind,
         substring($7::bytea FROM (sum(len) OVER (ORDER BY i) - len + 1)::int FOR len)
  FROM unnest($1::float8[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::int[])
    WITH ORDINALITY AS u(at, node_id, cluster_id, seq, kind, len, i)
),
hb_in AS (
  SELECT u.*, substring($15::bytea FROM (sum(len) OVER (ORDER BY i) - len + 1)::int FOR len) AS heartbeat,
         ARRAY(SELECT jsonb_array_elements_text(addrs::jsonb)) AS addresses
  FROM unnest($8::text[], $9::smallint[], $10::int[], $11::text[], $12::bigint[], $13::text[], $14::text[])
    WITH ORDINALITY AS u(id, health, len, agent, snap, addrs, cluster_id, i)
),
-- A heartbeat is the state of the node's membership in the cluster of its certificate: one row per node
-- and cluster. Only the home cluster's row also changes the node entity (the host picture of the router).
hb_old AS (
  SELECT s.* FROM node_status s JOIN hb_in u ON s.node_id = u.id AND s.cluster_id = u.cluster_id
  ORDER BY s.node_id, s.cluster_id FOR UPDATE OF s
),
hb_new AS (
  SELECT n.id, n.health, n.heartbeat, n.agent, n.snap, n.cluster_id, o.online AS was_online,
         CASE WHEN cardinality(n.addresses) > 0 OR o.node_id IS NULL THEN n.addresses ELSE o.addresses END AS addresses,
         o.node_id IS NULL OR NOT o.online OR o.health <> n.health OR o.agent_version <> n.agent
           OR o.snapshot_version <> n.snap OR (cardinality(n.addresses) > 0 AND o.addresses <> n.addresses)
           OR o.emitted_at <= now() - $38 * interval '1 millisecond' AS emit,
         o.emitted_at, nd.home_cluster_id IS NOT DISTINCT FROM n.cluster_id AS home
  FROM hb_in n LEFT JOIN hb_old o ON o.node_id = n.id AND o.cluster_id = n.cluster_id
  LEFT JOIN nodes nd ON nd.id = n.id
),
hb AS (
  INSERT INTO node_status (node_id, cluster_id, online, health, heartbeat, addresses, agent_version,
                           snapshot_version, last_heartbeat_at, emitted_at)
  SELECT id, cluster_id, true, health, heartbeat, addresses, agent, snap, now(),
         CASE WHEN emit THEN now() ELSE emitted_at END
  FROM hb_new
  ON CONFLICT (node_id, cluster_id) DO UPDATE SET online = true, health = excluded.health, heartbeat = excluded.heartbeat,
    addresses = excluded.addresses, agent_version = excluded.agent_version,
    snapshot_version = excluded.snapshot_version, last_heartbeat_at = excluded.last_heartbeat_at,
    emitted_at = excluded.emitted_at
),
seen AS (
  UPDATE memberships SET last_seen_at = now()
  WHERE id IN (SELECT m.id FROM memberships m JOIN unnest($16::text[], $17::text[]) AS u(node_id, cluster_id)
                 ON m.node_id = u.node_id AND m.cluster_id = u.cluster_id ORDER BY m.id FOR UPDATE OF m)
  RETURNING id, node_id, cluster_id
),
ws_in AS (
  -- Only workloads of the reporting node's cluster get a status row; others are only logged.
  SELECT u.* FROM unnest($18::text[], $19::text[], $20::text[], $21::bigint[], $22::smallint[], $23::int[],
                         $24::int[], $25::text[], $26::float8[]) AS u(w, n, c, g, st, re, x, msg, changed)
  JOIN workloads wl ON wl.id = u.w AND wl.cluster_id = u.c
),
ws_old AS (
  SELECT s.* FROM workload_status s JOIN ws_in u ON s.workload_id = u.w AND s.node_id = u.n
  ORDER BY s.workload_id, s.node_id FOR UPDATE OF s
),
ws AS (
  INSERT INTO workload_status (workload_id, node_id, cluster_id, generation, state, restarts, last_exit_code,
                               message, state_changed_at, reported_at, emitted_at)
  SELECT u.w, u.n, u.c, u.g, u.st, u.re, u.x, u.msg, to_timestamp(u.changed / 1000.0), now(),
         CASE WHEN o.workload_id IS NULL OR o.generation <> u.g OR o.state <> u.st OR o.restarts <> u.re
                OR o.last_exit_code <> u.x OR o.message <> u.msg OR o.emitted_at <= now() - $38 * interval '1 millisecond'
              THEN now() ELSE o.emitted_at END
  FROM ws_in u LEFT JOIN ws_old o ON o.workload_id = u.w AND o.node_id = u.n
  ON CONFLICT (workload_id, node_id) DO UPDATE SET generation = excluded.generation, state = excluded.state,
    restarts = excluded.restarts, last_exit_code = excluded.last_exit_code, message = excluded.message,
    state_changed_at = excluded.state_changed_at, reported_at = excluded.reported_at, emitted_at = excluded.emitted_at
  RETURNING workload_id, node_id, emitted_at
),
pr_in AS (
  SELECT * FROM unnest($27::text[], $28::text[], $29::text[], $30::float8[], $31::float8[], $32::float8[],
                       $33::float8[], $34::float8[], $35::float8[], $36::int[], $37::text[])
    AS u(c, f, t, lat_decay, lat_add, loss_decay, loss_add, first_lat, first_loss, n, fails)
),
pr_old AS (
  SELECT s.* FROM probe_stats s JOIN pr_in u ON s.cluster_id = u.c AND s.from_node_id = u.f AND s.to_node_id = u.t
  ORDER BY 1, 2, 3 FOR UPDATE OF s
),
pr_new AS (
  SELECT u.c, u.f, u.t, o.emitted_at, o.latency_us AS old_lat, o.loss_ratio AS old_loss,
         COALESCE(o.latency_us, u.first_lat) * u.lat_decay + u.lat_add AS lat,
         COALESCE(o.loss_ratio, u.first_loss) * u.loss_decay + u.loss_add AS loss,
         LEAST(COALESCE(o.samples, 0)::bigint + u.n, 2147483647)::int AS samples,
         ARRAY(SELECT f FROM unnest(COALESCE(o.failures, '{}') ||
                 ARRAY(SELECT x::timestamptz FROM jsonb_array_elements_text(u.fails::jsonb) x)) f
               WHERE f > now() - interval '10 minutes') AS failures,
         cardinality(ARRAY(SELECT f FROM unnest(COALESCE(o.failures, '{}')) f WHERE f > now() - interval '10 minutes')) AS old_failures,
         o.cluster_id IS NULL AS fresh
  FROM pr_in u LEFT JOIN pr_old o ON o.cluster_id = u.c AND o.from_node_id = u.f AND o.to_node_id = u.t
),
pr AS (
  INSERT INTO probe_stats (cluster_id, from_node_id, to_node_id, latency_us, loss_ratio, samples, failures,
                           updated_at, emitted_at)
  SELECT c, f, t, lat, loss, samples, failures, now(),
         CASE WHEN fresh OR abs(lat - old_lat) > 0.2 * GREATEST(old_lat, 1000) OR abs(loss - old_loss) >= 0.05
                OR cardinality(failures) <> old_failures OR emitted_at <= now() - $38 * interval '1 millisecond'
              THEN now() ELSE emitted_at END
  FROM pr_new
  ON CONFLICT (cluster_id, from_node_id, to_node_id) DO UPDATE SET latency_us = excluded.latency_us,
    loss_ratio = excluded.loss_ratio, samples = excluded.samples, failures = excluded.failures,
    updated_at = excluded.updated_at, emitted_at = excluded.emitted_at
  RETURNING cluster_id, from_node_id, to_node_id, emitted_at
)
SELECT 'membership_host' AS kind, id || '/' || cluster_id AS key, was_online IS NOT TRUE AS came_online, cluster_id
FROM hb_new WHERE emit
UNION ALL
SELECT 'node', id, false, '' FROM hb_new WHERE emit AND home
UNION ALL
SELECT 'membership', s.id, false, '' FROM seen s
  JOIN hb_new h ON h.id = s.node_id AND h.cluster_id = s.cluster_id AND h.emit
UNION ALL
SELECT 'workload_status', workload_id || '/' || node_id, false, '' FROM ws WHERE emitted_at = now()
UNION ALL
SELECT 'probe_stats', cluster_id || '/' || from_node_id || '/' || to_node_id, false, '' FROM pr WHERE emitted_at = now()`;

/** Latest of each kind within the batch, in key order (the lock order of BATCH_SQL). */
function lastBy<T>(
  batch: Report[],
  kind: Report["payload"]["case"],
  key: (r: Report, v: T) => string,
): { r: Report; v: T }[] {
  const out = new Map<string, { r: Report; v: T }>();
  for (const r of batch)
    if (r.payload.case === kind) out.set(key(r, r.payload.value as T), { r, v: r.payload.value as T });
  return [...out.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, e]) => e);
}

function encode(r: Report): Uint8Array {
  switch (r.payload.case) {
    case "heartbeat":
      return toBinary(HeartbeatSchema, r.payload.value);
    case "workloadStatus":
      return toBinary(WorkloadStatusReportSchema, r.payload.value);
    case "probe":
      return toBinary(ProbeReportSchema, r.payload.value);
  }
}

/**
 * Exponential smoothing of a pair's windows, in batch order, as decay and addend: after windows
 * x1..xk the smoothed value is old × (1-α)^k + Σ α(1-α)^(k-i) xi, and a pair seen for the first time
 * starts from x1 (so old = x1). Windows with no answer at all count for loss, not for latency.
 */
function foldProbes(batch: Report[]) {
  const pairs = new Map<string, { r: Report; lat: number[]; loss: number[]; n: number; fails: string[] }>();
  for (const r of batch) {
    if (r.payload.case !== "probe") continue;
    const p: ProbeReport = r.payload.value;
    const key = probeKey(r.clusterId, r.nodeId, p.peerNodeId);
    const pair = pairs.get(key) ?? { r, lat: [], loss: [], n: 0, fails: [] };
    const failed = p.samples > 0 && p.lossRatio >= 1;
    if (!failed) pair.lat.push(p.latency ? Number(p.latency.seconds) * 1e6 + p.latency.nanos / 1e3 : 0);
    else pair.fails.push(r.receivedAt.toISOString());
    pair.loss.push(p.lossRatio);
    pair.n += p.samples;
    pairs.set(key, pair);
  }
  const smooth = (xs: number[]) => ({
    decay: (1 - PROBE_ALPHA) ** xs.length,
    add: xs.reduce((acc, x) => acc * (1 - PROBE_ALPHA) + PROBE_ALPHA * x, 0),
  });
  return [...pairs.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([, pair]) => ({ ...pair, latency: smooth(pair.lat), lossFold: smooth(pair.loss) }));
}

function concat(parts: Uint8Array[]): Buffer {
  return Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)));
}

function batchParams(batch: Report[], coalesceMs: number): unknown[] {
  const payloads = batch.map(encode);
  const heartbeats = lastBy<Heartbeat>(batch, "heartbeat", (r) => `${r.nodeId}/${r.clusterId}`);
  const heartbeatBytes = heartbeats.map((h) => toBinary(HeartbeatSchema, h.v));
  const seen = [...new Map(batch.map((r) => [`${r.nodeId}/${r.clusterId}`, r])).values()];
  const statuses = lastBy<WorkloadStatusReport>(batch, "workloadStatus", (r, v) =>
    workloadStatusKey(v.workloadId, r.nodeId),
  );
  const probes = foldProbes(batch);
  return [
    batch.map((r) => r.receivedAt.getTime()),
    batch.map((r) => r.nodeId),
    batch.map((r) => r.clusterId),
    batch.map((r) => r.seq.toString()),
    batch.map((r) => r.payload.case),
    payloads.map((p) => p.length),
    concat(payloads),
    heartbeats.map((h) => h.r.nodeId),
    heartbeats.map((h) => h.v.health),
    heartbeatBytes.map((b) => b.length),
    heartbeats.map((h) => h.v.agentVersion),
    heartbeats.map((h) => h.v.snapshotVersion.toString()),
    heartbeats.map((h) => JSON.stringify(h.v.addresses)),
    heartbeats.map((h) => h.r.clusterId),
    concat(heartbeatBytes),
    seen.map((r) => r.nodeId),
    seen.map((r) => r.clusterId),
    statuses.map((s) => s.v.workloadId),
    statuses.map((s) => s.r.nodeId),
    statuses.map((s) => s.r.clusterId),
    statuses.map((s) => s.v.generation.toString()),
    statuses.map((s) => s.v.state),
    statuses.map((s) => s.v.restarts),
    statuses.map((s) => s.v.lastExitCode),
    statuses.map((s) => s.v.message),
    statuses.map((s) => (s.v.stateChangedAt ? timestampDate(s.v.stateChangedAt).getTime() : null)),
    probes.map((p) => p.r.clusterId),
    probes.map((p) => p.r.nodeId),
    probes.map((p) => (p.r.payload.value as ProbeReport).peerNodeId),
    probes.map((p) => p.latency.decay),
    probes.map((p) => p.latency.add),
    probes.map((p) => p.lossFold.decay),
    probes.map((p) => p.lossFold.add),
    probes.map((p) => p.lat[0] ?? 0),
    probes.map((p) => p.loss[0] ?? 0),
    probes.map((p) => p.n),
    probes.map((p) => JSON.stringify(p.fails)),
    coalesceMs,
  ];
}
