-- What nodes report over their Sessions, written in batches (group commit): latest state per node,
-- per workload and node, and per probed pair, plus an append-only log pruned after the retention period.
-- emitted_at is when the row last produced a change-feed entry: load-only updates are coalesced.

CREATE TABLE node_status (
  node_id           text PRIMARY KEY REFERENCES nodes (id),
  online            boolean NOT NULL,
  health            smallint NOT NULL,
  heartbeat         bytea NOT NULL,
  addresses         text[] NOT NULL DEFAULT '{}',
  agent_version     text NOT NULL DEFAULT '',
  snapshot_version  bigint NOT NULL DEFAULT 0,
  last_heartbeat_at timestamptz NOT NULL,
  emitted_at        timestamptz NOT NULL
);
-- The offline sweep looks only at nodes still marked online.
CREATE INDEX node_status_online ON node_status (last_heartbeat_at) WHERE online;

CREATE TABLE workload_status (
  workload_id      text NOT NULL,
  node_id          text NOT NULL REFERENCES nodes (id),
  cluster_id       text NOT NULL,
  generation       bigint NOT NULL,
  state            smallint NOT NULL,
  restarts         integer NOT NULL,
  last_exit_code   integer NOT NULL,
  message          text NOT NULL,
  state_changed_at timestamptz,
  reported_at      timestamptz NOT NULL,
  emitted_at       timestamptz NOT NULL,
  PRIMARY KEY (workload_id, node_id)
);

-- Smoothed probe figures per measured pair; failures holds the times of probe windows with no answer
-- at all during the last 10 minutes.
CREATE TABLE probe_stats (
  cluster_id   text NOT NULL,
  from_node_id text NOT NULL REFERENCES nodes (id),
  to_node_id   text NOT NULL,
  latency_us   double precision NOT NULL,
  loss_ratio   real NOT NULL,
  samples      integer NOT NULL,
  failures     timestamptz[] NOT NULL DEFAULT '{}',
  updated_at   timestamptz NOT NULL,
  emitted_at   timestamptz NOT NULL,
  PRIMARY KEY (cluster_id, from_node_id, to_node_id)
);

-- Every report as received (payload: the Heartbeat, WorkloadStatusReport or ProbeReport message).
-- Append-only; rows older than the retention period are deleted in the background.
CREATE TABLE report_log (
  id          bigserial PRIMARY KEY,
  received_at timestamptz NOT NULL,
  node_id     text NOT NULL,
  cluster_id  text NOT NULL,
  seq         bigint NOT NULL,
  kind        text NOT NULL,
  payload     bytea NOT NULL
);
CREATE INDEX report_log_received_at ON report_log USING brin (received_at);
