import { transaction, type Logger, type Pool } from "@fabric/platform";
import { ChangeSet, writeChanges } from "./changes.js";
import { membershipHostKey } from "./entities.js";

/** Heartbeats a node may miss before it counts as offline. */
export const MISSED_HEARTBEATS = 3;

/**
 * Marks nodes offline after three missed heartbeats: every half interval, memberships still online whose
 * last heartbeat (database time) is older than three intervals are flipped, each flip audited and written to
 * the change feed in one transaction. Safe to run in several registry processes at once.
 */
export function startLivenessSweep(options: {
  pool: Pool;
  logger: Logger;
  heartbeatIntervalMs: number;
}): () => void {
  const { pool, logger, heartbeatIntervalMs } = options;
  let running = false;
  const sweep = async () => {
    if (running) return;
    running = true;
    try {
      await markOffline(pool, heartbeatIntervalMs * MISSED_HEARTBEATS);
    } catch (err) {
      logger.debug({ err: (err as Error).message }, "offline sweep skipped");
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void sweep(), Math.max(50, heartbeatIntervalMs / 2));
  timer.unref();
  return () => clearInterval(timer);
}

/** Flips silent memberships offline; the node entity follows its home cluster's membership. */
async function markOffline(pool: Pool, silentMs: number): Promise<string[]> {
  const changes = new ChangeSet();
  return transaction(pool, async (tx) => {
    const { rows } = await tx.query<{
      node_id: string;
      cluster_id: string;
      last_heartbeat_at: Date;
      home: boolean;
    }>(
      `UPDATE node_status s SET online = false, emitted_at = now()
       FROM nodes n
       WHERE n.id = s.node_id AND (s.node_id, s.cluster_id) IN (
         SELECT node_id, cluster_id FROM node_status
         WHERE online AND last_heartbeat_at < now() - $1 * interval '1 millisecond'
         ORDER BY node_id, cluster_id FOR UPDATE SKIP LOCKED)
       RETURNING s.node_id, s.cluster_id, s.last_heartbeat_at, n.home_cluster_id = s.cluster_id AS home`,
      [silentMs],
    );
    for (const row of rows) {
      changes.touch("membership_host", membershipHostKey(row.node_id, row.cluster_id));
      if (row.home) changes.touch("node", row.node_id);
      tx.audit({
        actorId: "registry",
        actorKind: "service",
        action: "node.offline",
        targetType: "node",
        targetId: row.node_id,
        clusterId: row.cluster_id,
        outcome: "success",
        details: {
          missed_heartbeats: String(MISSED_HEARTBEATS),
          last_heartbeat_at: row.last_heartbeat_at.toISOString(),
        },
      });
    }
    await writeChanges(tx, changes);
    return rows.map((r) => r.node_id);
  });
}
