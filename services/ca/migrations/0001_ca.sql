-- Every certificate the CA issued: public facts only (never keys). ListCertificates pages newest issued
-- first by (issued_at, seq); revocation columns are set once and never cleared (revocation is final).
CREATE TABLE certificates (
  seq                 bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  serial              text PRIMARY KEY,
  principal_kind      text NOT NULL,
  principal_id        text NOT NULL,
  cluster_id          text NOT NULL DEFAULT '',
  organization_id     text NOT NULL DEFAULT '',
  grants              text[] NOT NULL DEFAULT '{}',
  spiffe_id           text NOT NULL,
  not_before          timestamptz NOT NULL,
  not_after           timestamptz NOT NULL,
  fingerprint_sha256  text NOT NULL,
  authorization_ref   text NOT NULL,
  issued_at           timestamptz NOT NULL,
  revoked_at          timestamptz,
  revocation_reason   integer,
  CHECK ((revoked_at IS NULL) = (revocation_reason IS NULL))
);
CREATE INDEX certificates_newest ON certificates (issued_at DESC, seq DESC);
CREATE INDEX certificates_principal ON certificates (principal_kind, principal_id, issued_at DESC);
CREATE INDEX certificates_cluster ON certificates (cluster_id, issued_at DESC, seq DESC);
-- The CRL and OCSP read revoked, unexpired certificates.
CREATE INDEX certificates_revoked ON certificates (not_after) WHERE revoked_at IS NOT NULL;

-- The revocation feed behind WatchRevocations: one row per revocation, versions assigned under the
-- head row's lock so they commit in order and a watcher resuming from version V misses nothing.
CREATE TABLE revocation_events (
  version          bigint PRIMARY KEY,
  serial           text NOT NULL DEFAULT '',
  principal_kind   text NOT NULL,
  principal_id     text NOT NULL,
  cluster_id       text NOT NULL DEFAULT '',
  reason           integer NOT NULL,
  revoked_at       timestamptz NOT NULL,
  not_after        timestamptz NOT NULL
);
CREATE INDEX revocation_events_live ON revocation_events (not_after);
-- Principal-wide entries, read when issuing so a new certificate starts after its principal's revocation.
CREATE INDEX revocation_events_principal ON revocation_events (principal_kind, principal_id, revoked_at DESC)
  WHERE serial = '';

CREATE TABLE revocation_head (
  id       boolean PRIMARY KEY DEFAULT true CHECK (id),
  version  bigint NOT NULL
);
INSERT INTO revocation_head (version) VALUES (0);

-- Each CRL the CA signs carries the next number (RFC 5280 CRLNumber only grows).
CREATE SEQUENCE crl_number;
