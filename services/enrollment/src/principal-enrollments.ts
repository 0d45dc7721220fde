import type { Pool, Tx } from "@fabric/platform";

/**
 * When each identity last enrolled from scratch (join approval, PIN bootstrap), keyed by SPIFFE ID, and
 * the certificate lifetime it was given then. Renewal keeps the identity going only up to the maximum
 * enrollment age counted from here, and never with a longer lifetime than it was given.
 */
export interface EnrolledIdentity {
  spiffeId: string;
  kind: string;
  principalId: string;
}

/** A fresh enrollment: (re)starts the identity's enrollment age now, with the lifetime it was given. */
export async function recordEnrollment(
  tx: Tx,
  identity: EnrolledIdentity & { lifetimeMs: number },
): Promise<void> {
  await tx.query(
    `INSERT INTO principal_enrollments (spiffe_id, kind, principal_id, first_enrolled_at, lifetime_ms)
     VALUES ($1, $2, $3, now(), $4)
     ON CONFLICT (spiffe_id) DO UPDATE SET first_enrolled_at = now(), last_renewed_at = NULL,
       lifetime_ms = EXCLUDED.lifetime_ms`,
    [identity.spiffeId, identity.kind, identity.principalId, identity.lifetimeMs],
  );
}

export interface EnrollmentRecord {
  firstEnrolledAt: Date;
  /** The lifetime granted at enrollment; undefined when not recorded. */
  lifetimeMs: number | undefined;
}

/**
 * When the identity was first enrolled, and the lifetime it was given. Identities enrolled outside this
 * service (bootstrap admins, offline issuance) have no row until their first renewal: their current
 * certificate's notBefore is taken as the start then, which never makes them younger than they are.
 */
export async function enrollmentOf(
  pool: Pool,
  spiffeId: string,
  certificateNotBefore: Date,
): Promise<EnrollmentRecord> {
  const { rows } = await pool.query<{ first_enrolled_at: Date; lifetime_ms: string | null }>(
    "SELECT first_enrolled_at, lifetime_ms::text FROM principal_enrollments WHERE spiffe_id = $1",
    [spiffeId],
  );
  const row = rows[0];
  return {
    firstEnrolledAt: row?.first_enrolled_at ?? certificateNotBefore,
    lifetimeMs: row?.lifetime_ms ? Number(row.lifetime_ms) : undefined,
  };
}

/**
 * Notes a successful renewal, recording identities enrolled elsewhere on first sight with the lifetime
 * their renewal was capped at (which then caps every later renewal: it never creeps up).
 */
export async function recordRenewal(
  tx: Tx,
  identity: EnrolledIdentity & { firstEnrolledAt: Date; lifetimeMs: number },
): Promise<void> {
  await tx.query(
    `INSERT INTO principal_enrollments (spiffe_id, kind, principal_id, first_enrolled_at, last_renewed_at,
       lifetime_ms)
     VALUES ($1, $2, $3, $4, now(), $5)
     ON CONFLICT (spiffe_id) DO UPDATE SET last_renewed_at = now(),
       lifetime_ms = COALESCE(principal_enrollments.lifetime_ms, EXCLUDED.lifetime_ms)`,
    [identity.spiffeId, identity.kind, identity.principalId, identity.firstEnrolledAt, identity.lifetimeMs],
  );
}
