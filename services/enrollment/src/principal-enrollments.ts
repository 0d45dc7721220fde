import type { Pool, Tx } from "@fabric/platform";

/**
 * When each identity last enrolled from scratch (join approval, PIN bootstrap), keyed by SPIFFE ID.
 * Renewal keeps the identity going only up to the maximum enrollment age counted from here.
 */
export interface EnrolledIdentity {
  spiffeId: string;
  kind: string;
  principalId: string;
}

/** A fresh enrollment: (re)starts the identity's enrollment age now. */
export async function recordEnrollment(tx: Tx, identity: EnrolledIdentity): Promise<void> {
  await tx.query(
    `INSERT INTO principal_enrollments (spiffe_id, kind, principal_id, first_enrolled_at)
     VALUES ($1, $2, $3, now())
     ON CONFLICT (spiffe_id) DO UPDATE SET first_enrolled_at = now(), last_renewed_at = NULL`,
    [identity.spiffeId, identity.kind, identity.principalId],
  );
}

/**
 * When the identity was first enrolled. Identities enrolled outside this service (bootstrap admins,
 * offline issuance) have no row until their first renewal: their current certificate's notBefore is
 * taken as the start then, which never makes them younger than they are.
 */
export async function firstEnrolledAt(
  pool: Pool,
  spiffeId: string,
  certificateNotBefore: Date,
): Promise<Date> {
  const { rows } = await pool.query<{ first_enrolled_at: Date }>(
    "SELECT first_enrolled_at FROM principal_enrollments WHERE spiffe_id = $1",
    [spiffeId],
  );
  return rows[0]?.first_enrolled_at ?? certificateNotBefore;
}

/** Notes a successful renewal, recording identities enrolled elsewhere on first sight. */
export async function recordRenewal(
  tx: Tx,
  identity: EnrolledIdentity & { firstEnrolledAt: Date },
): Promise<void> {
  await tx.query(
    `INSERT INTO principal_enrollments (spiffe_id, kind, principal_id, first_enrolled_at, last_renewed_at)
     VALUES ($1, $2, $3, $4, now())
     ON CONFLICT (spiffe_id) DO UPDATE SET last_renewed_at = now()`,
    [identity.spiffeId, identity.kind, identity.principalId, identity.firstEnrolledAt],
  );
}
