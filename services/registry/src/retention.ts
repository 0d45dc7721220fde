import type { Logger, Pool } from "@fabric/platform";

const CHUNK = 10_000;

/**
 * Deletes what has outlived its retention: Session reports in the append-only log, and change-feed rows
 * (recording the highest version deleted, so a watcher resuming from before it relists instead of
 * missing changes). Housekeeping of logs, not a change to the registry's state, so not audited.
 */
export function startRetention(options: {
  pool: Pool;
  logger: Logger;
  intervalMs: number;
  reportRetentionMs: number;
  changeRetentionMs: number;
}): () => void {
  let running = false;
  const run = async () => {
    if (running) return;
    running = true;
    try {
      await pruneReports(options.pool, options.reportRetentionMs);
      await pruneChanges(options.pool, options.changeRetentionMs);
    } catch (err) {
      options.logger.debug({ err: (err as Error).message }, "retention sweep skipped");
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void run(), options.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

async function pruneReports(pool: Pool, olderThanMs: number): Promise<number> {
  let total = 0;
  for (;;) {
    const res = await pool.query(
      `DELETE FROM report_log WHERE id IN (
         SELECT id FROM report_log WHERE received_at < now() - $1 * interval '1 millisecond' ORDER BY id LIMIT ${CHUNK})`,
      [olderThanMs],
    );
    total += res.rowCount ?? 0;
    if ((res.rowCount ?? 0) < CHUNK) return total;
  }
}

/** Deletes change rows older than the retention, oldest first, moving the pruned mark with them. */
export async function pruneChanges(pool: Pool, olderThanMs: number): Promise<number> {
  let total = 0;
  for (;;) {
    const res = await pool.query<{ n: string }>(
      `WITH gone AS (
         DELETE FROM changes WHERE version IN (
           SELECT version FROM changes WHERE at < now() - $1 * interval '1 millisecond' ORDER BY version LIMIT ${CHUNK})
         RETURNING version),
       mark AS (
         UPDATE change_retention SET pruned_through = GREATEST(pruned_through, (SELECT max(version) FROM gone))
         WHERE EXISTS (SELECT 1 FROM gone))
       SELECT count(*)::text AS n FROM gone`,
      [olderThanMs],
    );
    const n = Number(res.rows[0]!.n);
    total += n;
    if (n < CHUNK) return total;
  }
}
