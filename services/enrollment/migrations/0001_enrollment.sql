-- Join tokens. The secret is never stored: only its SHA-256 (the secret is 32 random bytes, so a fast hash
-- is as strong as a slow one). Rows outlive their expiry for a retention period so a late Join gets the
-- precise "expired" refusal and operators can still list them; a periodic job deletes them afterwards.
CREATE TABLE join_tokens (
  id               text PRIMARY KEY,
  -- Creation order, for newest-first listing and page tokens.
  seq              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  secret_sha256    bytea NOT NULL CHECK (length(secret_sha256) = 32),
  cluster_id       text NOT NULL,
  allowed_roles    text[] NOT NULL DEFAULT '{}',
  max_uses         integer NOT NULL CHECK (max_uses BETWEEN 1 AND 1000),
  -- The CHECK is the last line of defence; Join's guarded UPDATE never lets uses pass max_uses.
  uses             integer NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
  auto_approve     boolean NOT NULL DEFAULT false,
  description      text NOT NULL DEFAULT '',
  created_at       timestamptz NOT NULL DEFAULT now(),
  expires_at       timestamptz NOT NULL,
  revoked_at       timestamptz,
  created_by_kind  text NOT NULL,
  created_by_id    text NOT NULL
);
CREATE INDEX join_tokens_cluster_newest ON join_tokens (cluster_id, seq DESC);
CREATE INDEX join_tokens_expiry ON join_tokens (expires_at);

-- Join requests. `approving` is internal: the admin's decision is recorded (node id, roles, lifetime) and
-- the certificate may already be issued, but the registry has not yet confirmed the node; the API shows
-- it as PENDING and the reconciler completes it. Certificates, chains and CSRs are public material.
CREATE TABLE join_requests (
  id                      uuid PRIMARY KEY,
  seq                     bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  token_id                text NOT NULL,
  cluster_id              text NOT NULL,
  node_name               text NOT NULL,
  facts                   bytea NOT NULL,          -- fabric.common.v1.NodeFacts, protobuf binary
  capabilities            text[] NOT NULL DEFAULT '{}',
  requested_roles         text[] NOT NULL DEFAULT '{}',
  allowed_roles           text[] NOT NULL DEFAULT '{}',
  auto_approve            boolean NOT NULL DEFAULT false,
  csr_pem                 text NOT NULL,
  public_key_spki         bytea NOT NULL,
  public_key_sha256       text NOT NULL,
  challenge               bytea NOT NULL CHECK (length(challenge) = 32),
  peer_address            text NOT NULL DEFAULT '',
  state                   text NOT NULL
                            CHECK (state IN ('pending', 'approving', 'approved', 'rejected', 'expired')),
  created_at              timestamptz NOT NULL DEFAULT now(),
  -- Pending: when the request expires. Approved: until when the certificate can be collected.
  expires_at              timestamptz NOT NULL,
  decided_at              timestamptz,
  decided_by_kind         text,
  decided_by_id           text,
  rejection_reason        text NOT NULL DEFAULT '',
  granted_roles           text[] NOT NULL DEFAULT '{}',
  node_id                 text,
  certificate_lifetime_ms bigint,
  certificate_serial      text,
  certificate_pem         text,
  chain_pem               text[],
  ca_bundle_pem           text,
  certificate_not_after   timestamptz,
  registered_at           timestamptz,
  CHECK (state NOT IN ('approving', 'approved') OR (node_id IS NOT NULL AND decided_at IS NOT NULL)),
  CHECK (state <> 'approved' OR (certificate_serial IS NOT NULL AND registered_at IS NOT NULL))
);
CREATE INDEX join_requests_cluster_newest ON join_requests (cluster_id, seq DESC);
-- The reconciler and the expiry job look only at unfinished requests.
CREATE INDEX join_requests_open ON join_requests (state, expires_at) WHERE state IN ('pending', 'approving');

-- Certificates issued for an approval that did not go through (a concurrent duplicate, or one the registry
-- refused): revoked at the CA by the reconciler, then deleted.
CREATE TABLE abandoned_certificates (
  serial           text PRIMARY KEY,
  join_request_id  uuid NOT NULL,
  reason           text NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now()
);

-- One developer PIN per developer id: a new PIN replaces the previous one (and lifts a lockout). The PIN is
-- stored only as an scrypt hash; failed attempts count towards the lockout.
CREATE TABLE developer_pins (
  developer_id        text PRIMARY KEY,
  pin_hash            text NOT NULL,
  organization_id     text NOT NULL DEFAULT '',
  default_cluster_id  text NOT NULL DEFAULT '',
  issued_at           timestamptz NOT NULL DEFAULT now(),
  expires_at          timestamptz NOT NULL,
  issued_by_kind      text NOT NULL,
  issued_by_id        text NOT NULL,
  failed_attempts     integer NOT NULL DEFAULT 0,
  used_at             timestamptz
);

-- When each identity (by SPIFFE ID, which names kind, id and for nodes the cluster) was last enrolled from
-- scratch. Renewal keeps it; enrolling again (join approval, PIN bootstrap) resets it. Renewal is refused
-- once it is older than the maximum enrollment age.
CREATE TABLE principal_enrollments (
  spiffe_id          text PRIMARY KEY,
  kind               text NOT NULL,
  principal_id       text NOT NULL,
  first_enrolled_at  timestamptz NOT NULL,
  last_renewed_at    timestamptz
);
