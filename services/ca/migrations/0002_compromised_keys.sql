-- SHA-256 of each certificate's SubjectPublicKeyInfo DER, lowercase hex, so that a key reported
-- compromised is found on every certificate that carries it. NULL for certificates recorded before.
ALTER TABLE certificates ADD COLUMN public_key_sha256 text;
CREATE INDEX certificates_public_key ON certificates (public_key_sha256) WHERE public_key_sha256 IS NOT NULL;

-- Keys whose certificates were revoked for keyCompromise: Sign refuses them for good, whoever asks and
-- for whatever principal (Join, BootstrapDeveloper, Renew and the services' own renewals all end there).
CREATE TABLE compromised_keys (
  public_key_sha256  text PRIMARY KEY,
  -- The certificate whose revocation reported the key.
  serial             text NOT NULL,
  reported_at        timestamptz NOT NULL,
  reported_by_kind   text NOT NULL,
  reported_by_id     text NOT NULL
);
