-- Which organization each developer id belongs to. Developer ids are global (the certificate's CN and its
-- SPIFFE ID user/<id> name no organization), so the first PIN issued for an id binds it to that PIN's
-- organization ('' = none) for good: no admin of another organization can issue a PIN for it, and so none
-- can replace its pending PIN or have a certificate minted for it.
CREATE TABLE developers (
  developer_id     text PRIMARY KEY,
  organization_id  text NOT NULL,
  bound_at         timestamptz NOT NULL DEFAULT now(),
  bound_by_kind    text NOT NULL,
  bound_by_id      text NOT NULL
);
-- Every developer id a PIN was issued for before is bound to that PIN's organization (PIN rows are kept
-- after use, one per developer).
INSERT INTO developers (developer_id, organization_id, bound_at, bound_by_kind, bound_by_id)
  SELECT developer_id, organization_id, issued_at, issued_by_kind, issued_by_id FROM developer_pins;

-- The certificate lifetime an identity was given when it last enrolled (the approval's, the bootstrap's),
-- or its certificate's own when first seen at renewal: a renewal never grants more. NULL for rows from
-- before: the presented certificate's lifetime caps those.
ALTER TABLE principal_enrollments ADD COLUMN lifetime_ms bigint CHECK (lifetime_ms > 0);
