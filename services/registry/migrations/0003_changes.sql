-- The change feed. Each committed change to an entity adds a row here in the same transaction, with a
-- bigserial version, and calls pg_notify so every registry process wakes and reads the rows after the
-- version it holds. Writers take one transaction-scoped advisory lock before allocating versions, so
-- versions become visible in commit order and a reader never skips a slower, lower version.
-- payload holds the entity message as of the change (protobuf binary; for deletions, its last state or
-- at least its key). cluster_ids lists the clusters the entity concerns, for filtered watchers.
CREATE TABLE changes (
  version     bigserial PRIMARY KEY,
  kind        text NOT NULL,
  entity_key  text NOT NULL,
  cluster_ids text[] NOT NULL DEFAULT '{}',
  deleted     boolean NOT NULL DEFAULT false,
  payload     bytea NOT NULL,
  at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX changes_at ON changes USING brin (at);

-- Highest version deleted by retention: a watcher holding an older version must relist.
CREATE TABLE change_retention (
  id             boolean PRIMARY KEY DEFAULT true CHECK (id),
  pruned_through bigint NOT NULL DEFAULT 0
);
INSERT INTO change_retention DEFAULT VALUES;

-- Keys for deriving stable opaque ids (organization views never show node ids). 256 random bits from
-- two v4 UUIDs, which Postgres draws from its strong random source.
CREATE TABLE view_keys (
  name text PRIMARY KEY,
  key  bytea NOT NULL
);
INSERT INTO view_keys (name, key)
VALUES ('org-entry-points', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));
