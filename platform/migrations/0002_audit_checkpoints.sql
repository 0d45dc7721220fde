-- Signed checkpoints of the audit chain (platform/src/audit-checkpoints.ts). The chain alone cannot show a
-- record rewritten with every later hash recomputed, or records cut from the end: a checkpoint, signed by
-- the service with its own identity key (which never leaves the process), records the hash of every record
-- from from_seq + 1 to seq as it was when signed. VerifyAudit checks each signature against the CA bundle
-- and each recorded hash against the chain as it is now.
CREATE TABLE audit_checkpoints (
  id            uuid PRIMARY KEY,
  -- Covers the records after from_seq up to and including seq.
  from_seq      bigint NOT NULL,
  seq           bigint NOT NULL,
  -- Hash of record seq: the chain's head when the checkpoint was signed.
  hash          bytea NOT NULL,
  -- The 32-byte hashes of records from_seq + 1 .. seq, in order.
  row_hashes    bytea NOT NULL,
  signed_at     timestamptz NOT NULL,
  -- PEM: the signing service certificate, then its intermediates.
  signer_chain  text NOT NULL,
  -- ECDSA P-256 over SHA-256 of the canonical checkpoint (checkpointPayload), DER.
  signature     bytea NOT NULL,
  CHECK (from_seq >= 0 AND seq > from_seq),
  CHECK (octet_length(hash) = 32),
  CHECK (octet_length(row_hashes) = (seq - from_seq) * 32)
);
CREATE INDEX audit_checkpoints_seq ON audit_checkpoints (seq);

-- One append-only guard for both tables, naming the table it refused.
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('fabric.audit_maintenance', true) = 'on' THEN
    RETURN COALESCE(NEW, OLD);
  END IF;
  RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
  FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
-- Row triggers do not fire on TRUNCATE.
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
  FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
