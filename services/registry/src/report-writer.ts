import { toBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { transaction, type Logger, type Pool, type Tx } from "@fabric/platform";
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
import { probeKey, workloadStatusKey } from "./entities.js";

/** One report from a node's Session, as received. */
export interface Report {
  nodeId: string;
  clusterId: string;
  seq: bigint;
  receivedAt: Date;
  payload: Exclude<SessionRequest["payload"], { case: undefined }>;
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

interface Pending {
  report: Report;
  resolve: () => void;
  reject: (err: unknown) => void;
}

// Smoothing of probe figures: each window moves the stored value this far toward the new one.
const PROBE_ALPHA = 0.3;
const FAILURE_WINDOW_MS = 10 * 60_000;

/**
 * Group commit for Session reports. Reports queue up; a batch is written when the first one has waited
 * flushMs or maxBatch are queued, as one transaction: every report into the append-only log, and the
 * latest state per node, per workload and node, and per probed pair, each upserted once per batch from
 * unnest() arrays. While a batch commits the next one gathers, so under load batches grow instead of
 * transactions multiplying. A report's promise resolves only after its batch committed: that is when the
 * Session acknowledges it.
 */
export class ReportWriter {
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing = false;
  private readonly batchSize: Histogram;
  private readonly flushSeconds: Histogram;
  private readonly written: Counter;

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
  }

  /** Reports waiting for a batch (for back-pressure). */
  get queued(): number {
    return this.queue.length;
  }

  /** Resolves once the report is durable. */
  submit(report: Report): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ report, resolve, reject });
      if (this.queue.length >= this.options.maxBatch) void this.flush();
      else if (!this.timer && !this.flushing) {
        this.timer = setTimeout(() => void this.flush(), this.options.flushMs);
      }
    });
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
        const started = process.hrtime.bigint();
        try {
          await this.writeRetrying(batch.map((p) => p.report));
          this.batchSize.observe(batch.length);
          this.flushSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
          for (const p of batch) this.written.inc({ kind: p.report.payload.case });
          for (const p of batch) p.resolve();
        } catch (err) {
          this.options.logger.warn({ err: (err as Error).message, reports: batch.length }, "report batch not written");
          for (const p of batch) p.reject(err);
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
      await appendLog(tx, batch);
      // Database time throughout, so the offline sweep compares like with like.
      const { rows } = await tx.query<{ now: Date }>("SELECT now() AS now");
      const now = rows[0]!.now;
      const emittedNodes = await writeHeartbeats(tx, batch, now, this.options.coalesceMs, changes);
      for (const m of await touchMemberships(tx, batch, now)) {
        if (emittedNodes.has(m.node_id)) changes.touch("membership", m.id);
      }
      await writeWorkloadStatus(tx, batch, now, this.options.coalesceMs, changes);
      await writeProbes(tx, batch, now, this.options.coalesceMs, changes);
      await writeChanges(tx, changes);
    });
  }
}

function lastBy<T>(batch: Report[], kind: Report["payload"]["case"], key: (r: Report, v: T) => string): Map<string, { r: Report; v: T }> {
  const out = new Map<string, { r: Report; v: T }>();
  for (const r of batch) if (r.payload.case === kind) out.set(key(r, r.payload.value as T), { r, v: r.payload.value as T });
  return out;
}

async function appendLog(tx: Tx, batch: Report[]): Promise<void> {
  const payload = (r: Report) => {
    switch (r.payload.case) {
      case "heartbeat":
        return toBinary(HeartbeatSchema, r.payload.value);
      case "workloadStatus":
        return toBinary(WorkloadStatusReportSchema, r.payload.value);
      case "probe":
        return toBinary(ProbeReportSchema, r.payload.value);
    }
  };
  await tx.query(
    `INSERT INTO report_log (received_at, node_id, cluster_id, seq, kind, payload)
     SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bytea[])`,
    [
      batch.map((r) => r.receivedAt),
      batch.map((r) => r.nodeId),
      batch.map((r) => r.clusterId),
      batch.map((r) => r.seq.toString()),
      batch.map((r) => r.payload.case),
      batch.map((r) => Buffer.from(payload(r))),
    ],
  );
}

/**
 * Latest heartbeat per node. A node comes online with its first heartbeat (audited); its row reaches the
 * change feed when anything but load changed, or when its last feed entry is older than coalesceMs.
 */
async function writeHeartbeats(
  tx: Tx,
  batch: Report[],
  now: Date,
  coalesceMs: number,
  changes: ChangeSet,
): Promise<Set<string>> {
  const emitted = new Set<string>();
  const latest = lastBy<Heartbeat>(batch, "heartbeat", (r) => r.nodeId);
  if (latest.size === 0) return emitted;
  const ids = [...latest.keys()].sort();
  const prior = new Map(
    (
      await tx.query(
        `SELECT node_id, online, health, addresses, agent_version, snapshot_version::text, emitted_at
         FROM node_status WHERE node_id = ANY($1) ORDER BY node_id FOR UPDATE`,
        [ids],
      )
    ).rows.map((row) => [row.node_id as string, row]),
  );
  const rows = ids.map((id) => {
    const { r, v } = latest.get(id)!;
    const before = prior.get(id);
    const addresses = v.addresses.length > 0 ? v.addresses : ((before?.addresses as string[]) ?? []);
    const changed =
      !before ||
      !before.online ||
      before.health !== v.health ||
      before.agent_version !== v.agentVersion ||
      before.snapshot_version !== v.snapshotVersion.toString() ||
      (before.addresses as string[]).join(",") !== addresses.join(",");
    const emit = changed || now.getTime() - (before.emitted_at as Date).getTime() >= coalesceMs;
    if (emit) {
      emitted.add(id);
      changes.touch("node", id);
      if (!before?.online) {
        tx.audit({
          actorId: id,
          actorKind: "node",
          action: "node.online",
          targetType: "node",
          targetId: id,
          clusterId: r.clusterId,
          outcome: "success",
        });
      }
    }
    return { id, v, addresses, emittedAt: emit ? now : (before!.emitted_at as Date) };
  });
  await tx.query(
    `INSERT INTO node_status (node_id, online, health, heartbeat, addresses, agent_version, snapshot_version,
       last_heartbeat_at, emitted_at)
     SELECT u.id, true, u.health, u.hb, ARRAY(SELECT jsonb_array_elements_text(u.addrs::jsonb)), u.agent, u.snap, $8, u.emitted
     FROM unnest($1::text[], $2::smallint[], $3::bytea[], $4::text[], $5::text[], $6::bigint[], $7::timestamptz[])
       AS u(id, health, hb, addrs, agent, snap, emitted)
     ON CONFLICT (node_id) DO UPDATE SET online = true, health = excluded.health, heartbeat = excluded.heartbeat,
       addresses = excluded.addresses, agent_version = excluded.agent_version,
       snapshot_version = excluded.snapshot_version, last_heartbeat_at = excluded.last_heartbeat_at,
       emitted_at = excluded.emitted_at`,
    [
      rows.map((x) => x.id),
      rows.map((x) => x.v.health),
      rows.map((x) => Buffer.from(toBinary(HeartbeatSchema, { ...x.v, addresses: x.addresses }))),
      rows.map((x) => JSON.stringify(x.addresses)),
      rows.map((x) => x.v.agentVersion),
      rows.map((x) => x.v.snapshotVersion.toString()),
      rows.map((x) => x.emittedAt),
      now,
    ],
  );
  return emitted;
}

/** Every report refreshes its membership's last_seen_at (fed to watchers with the node's coalesced entries). */
async function touchMemberships(tx: Tx, batch: Report[], now: Date): Promise<{ id: string; node_id: string }[]> {
  const pairs = new Map<string, Report>();
  for (const r of batch) pairs.set(`${r.nodeId}/${r.clusterId}`, r);
  const list = [...pairs.values()].sort((a, b) => (a.nodeId + a.clusterId < b.nodeId + b.clusterId ? -1 : 1));
  const { rows } = await tx.query<{ id: string; node_id: string }>(
    // Rows are locked in id order, as every other multi-membership writer does, so they cannot deadlock.
    `UPDATE memberships SET last_seen_at = $3 WHERE id IN (
       SELECT m.id FROM memberships m JOIN unnest($1::text[], $2::text[]) AS u(node_id, cluster_id)
         ON m.node_id = u.node_id AND m.cluster_id = u.cluster_id ORDER BY m.id FOR UPDATE OF m)
     RETURNING id, node_id`,
    [list.map((r) => r.nodeId), list.map((r) => r.clusterId), now],
  );
  return rows;
}

/** Latest status per workload and node, for workloads of the reporting node's cluster. */
async function writeWorkloadStatus(tx: Tx, batch: Report[], now: Date, coalesceMs: number, changes: ChangeSet): Promise<void> {
  const latest = lastBy<WorkloadStatusReport>(batch, "workloadStatus", (r, v) => workloadStatusKey(v.workloadId, r.nodeId));
  if (latest.size === 0) return;
  const keys = [...latest.keys()].sort();
  const entries = keys.map((k) => latest.get(k)!);
  const prior = new Map(
    (
      await tx.query(
        `SELECT s.workload_id, s.node_id, s.generation::text, s.state, s.restarts, s.last_exit_code, s.message, s.emitted_at
         FROM workload_status s JOIN unnest($1::text[], $2::text[]) AS u(w, n) ON s.workload_id = u.w AND s.node_id = u.n
         ORDER BY s.workload_id, s.node_id FOR UPDATE OF s`,
        [entries.map((e) => e.v.workloadId), entries.map((e) => e.r.nodeId)],
      )
    ).rows.map((row) => [workloadStatusKey(row.workload_id, row.node_id), row]),
  );
  const emitted = entries.map(({ r, v }) => {
    const before = prior.get(workloadStatusKey(v.workloadId, r.nodeId));
    const changed =
      !before ||
      before.generation !== v.generation.toString() ||
      before.state !== v.state ||
      before.restarts !== v.restarts ||
      before.last_exit_code !== v.lastExitCode ||
      before.message !== v.message;
    return changed || now.getTime() - (before.emitted_at as Date).getTime() >= coalesceMs ? now : (before.emitted_at as Date);
  });
  // Only workloads that exist in the reporting node's cluster get a status row; others are only logged.
  const { rows } = await tx.query(
    `INSERT INTO workload_status (workload_id, node_id, cluster_id, generation, state, restarts, last_exit_code,
       message, state_changed_at, reported_at, emitted_at)
     SELECT u.w, u.n, u.c, u.g, u.s, u.re, u.x, u.m, u.sc, $11, u.e
     FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::smallint[], $6::int[], $7::int[], $8::text[],
                 $9::timestamptz[], $10::timestamptz[]) AS u(w, n, c, g, s, re, x, m, sc, e)
     JOIN workloads wl ON wl.id = u.w AND wl.cluster_id = u.c
     ON CONFLICT (workload_id, node_id) DO UPDATE SET generation = excluded.generation, state = excluded.state,
       restarts = excluded.restarts, last_exit_code = excluded.last_exit_code, message = excluded.message,
       state_changed_at = excluded.state_changed_at, reported_at = excluded.reported_at,
       emitted_at = excluded.emitted_at
     RETURNING workload_id, node_id, emitted_at`,
    [
      entries.map((e) => e.v.workloadId),
      entries.map((e) => e.r.nodeId),
      entries.map((e) => e.r.clusterId),
      entries.map((e) => e.v.generation.toString()),
      entries.map((e) => e.v.state),
      entries.map((e) => e.v.restarts),
      entries.map((e) => e.v.lastExitCode),
      entries.map((e) => e.v.message),
      entries.map((e) => (e.v.stateChangedAt ? timestampDate(e.v.stateChangedAt) : null)),
      emitted,
      now,
    ],
  );
  for (const row of rows) {
    if ((row.emitted_at as Date).getTime() === now.getTime()) {
      changes.touch("workload_status", workloadStatusKey(row.workload_id, row.node_id));
    }
  }
}

/**
 * Smoothed probe figures per measured pair (the reporting node to its peer): an exponentially weighted
 * average of latency and loss, the probe count, and the windows with no answer at all in the last 10
 * minutes. A pair reaches the change feed when its figures moved noticeably, failures changed, or its
 * last feed entry is older than coalesceMs.
 */
async function writeProbes(tx: Tx, batch: Report[], now: Date, coalesceMs: number, changes: ChangeSet): Promise<void> {
  const reports = batch.filter((r) => r.payload.case === "probe");
  if (reports.length === 0) return;
  const keyOf = (r: Report) => probeKey(r.clusterId, r.nodeId, (r.payload.value as ProbeReport).peerNodeId);
  const keys = [...new Set(reports.map(keyOf))].sort();
  const parts = keys.map((k) => k.split("/"));
  const prior = new Map(
    (
      await tx.query(
        `SELECT p.cluster_id, p.from_node_id, p.to_node_id, p.latency_us, p.loss_ratio, p.samples, p.failures, p.emitted_at
         FROM probe_stats p JOIN unnest($1::text[], $2::text[], $3::text[]) AS u(c, f, t)
           ON p.cluster_id = u.c AND p.from_node_id = u.f AND p.to_node_id = u.t
         ORDER BY 1, 2, 3 FOR UPDATE OF p`,
        [parts.map((p) => p[0]), parts.map((p) => p[1]), parts.map((p) => p[2])],
      )
    ).rows.map((row) => [probeKey(row.cluster_id, row.from_node_id, row.to_node_id), row]),
  );
  const state = new Map<string, { latencyUs: number; loss: number; samples: number; failures: Date[] }>();
  for (const k of keys) {
    const before = prior.get(k);
    if (before) {
      state.set(k, {
        latencyUs: before.latency_us,
        loss: before.loss_ratio,
        samples: before.samples,
        failures: before.failures as Date[],
      });
    }
  }
  for (const r of reports) {
    const p = r.payload.value as ProbeReport;
    const k = keyOf(r);
    const latencyUs = p.latency ? Number(p.latency.seconds) * 1e6 + p.latency.nanos / 1e3 : 0;
    const s = state.get(k);
    const failed = p.samples > 0 && p.lossRatio >= 1;
    if (!s) {
      state.set(k, { latencyUs, loss: p.lossRatio, samples: p.samples, failures: failed ? [r.receivedAt] : [] });
      continue;
    }
    // A window with no answers says nothing about latency.
    if (!failed) s.latencyUs += PROBE_ALPHA * (latencyUs - s.latencyUs);
    s.loss += PROBE_ALPHA * (p.lossRatio - s.loss);
    s.samples = Math.min(2 ** 31 - 1, s.samples + p.samples);
    if (failed) s.failures.push(r.receivedAt);
  }
  const cutoff = now.getTime() - FAILURE_WINDOW_MS;
  const rows = keys.map((k) => {
    const s = state.get(k)!;
    const failures = s.failures.filter((f) => f.getTime() > cutoff);
    const before = prior.get(k);
    const recentBefore = before ? (before.failures as Date[]).filter((f) => f.getTime() > cutoff).length : -1;
    const moved =
      !before ||
      Math.abs(s.latencyUs - before.latency_us) > 0.2 * Math.max(before.latency_us, 1_000) ||
      Math.abs(s.loss - before.loss_ratio) >= 0.05 ||
      failures.length !== recentBefore;
    const emit = moved || now.getTime() - (before.emitted_at as Date).getTime() >= coalesceMs;
    if (emit) changes.touch("probe_stats", k);
    return { k, s, failures, emittedAt: emit ? now : (before!.emitted_at as Date) };
  });
  await tx.query(
    `INSERT INTO probe_stats (cluster_id, from_node_id, to_node_id, latency_us, loss_ratio, samples, failures,
       updated_at, emitted_at)
     SELECT u.c, u.f, u.t, u.l, u.loss, u.n, ARRAY(SELECT jsonb_array_elements_text(u.fails::jsonb)::timestamptz), $9, u.e
     FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::real[], $6::int[], $7::text[], $8::timestamptz[])
       AS u(c, f, t, l, loss, n, fails, e)
     ON CONFLICT (cluster_id, from_node_id, to_node_id) DO UPDATE SET latency_us = excluded.latency_us,
       loss_ratio = excluded.loss_ratio, samples = excluded.samples, failures = excluded.failures,
       updated_at = excluded.updated_at, emitted_at = excluded.emitted_at`,
    [
      rows.map((x) => x.k.split("/")[0]),
      rows.map((x) => x.k.split("/")[1]),
      rows.map((x) => x.k.split("/")[2]),
      rows.map((x) => x.s.latencyUs),
      rows.map((x) => x.s.loss),
      rows.map((x) => x.s.samples),
      rows.map((x) => JSON.stringify(x.failures.map((f) => f.toISOString()))),
      rows.map((x) => x.emittedAt),
      now,
    ],
  );
}
