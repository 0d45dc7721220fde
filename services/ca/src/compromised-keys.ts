import { FabricError, type Tx } from "@fabric/platform";
import type { StoredCertificate } from "./inventory.js";

/**
 * Keys revoked for keyCompromise. Revoking a certificate with that reason reports its key (the SHA-256 of
 * its SubjectPublicKeyInfo); from then on no Sign certifies that key again, for any principal and on any
 * path (Join, BootstrapDeveloper and Renew through enrollment, the services' own renewals), because every
 * certificate the CA hands out passes the issuance batch that checks here first.
 *
 * Issuance batches (shared) and compromise reports (exclusive) take one advisory lock, so a report and a
 * batch never overlap: the report either sees the batch's certificates and revokes them too, or the batch
 * sees the report and refuses them. Reports are rare; issuance waits for one only while it commits.
 */
const LOCK = "fabric-ca:compromised-keys";

/** The refusal of a Sign whose CSR carries a compromised key. */
export class CompromisedKeyError extends FabricError {
  constructor() {
    super(
      "failed-precondition",
      "this public key was revoked for key compromise and is never certified again; generate a new key pair and send a CSR for it",
    );
  }
}

/** The issuance side: which of these keys are compromised (taking the shared lock first). */
export async function compromisedAmong(tx: Tx, keys: string[]): Promise<Set<string>> {
  if (keys.length === 0) return new Set();
  // Its own statement: the query below must read after the lock is granted, not from before.
  await tx.query("SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))", [LOCK]);
  const { rows } = await tx.query<{ public_key_sha256: string }>(
    "SELECT public_key_sha256 FROM compromised_keys WHERE public_key_sha256 = ANY($1::text[])",
    [[...new Set(keys)]],
  );
  return new Set(rows.map((r) => r.public_key_sha256));
}

/** The reporting side: call first in the revoking transaction, before any certificate is locked. */
export async function lockForCompromiseReport(tx: Tx): Promise<void> {
  await tx.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", [LOCK]);
}

/**
 * Records the keys of `certificates` as compromised (certificates recorded before keys were, have none to
 * report) and returns the keys newly reported.
 */
export async function reportCompromisedKeys(
  tx: Tx,
  certificates: StoredCertificate[],
  at: Date,
  actor: { id: string; kind: string },
): Promise<string[]> {
  // Each key once, with the first certificate that reported it.
  const serialOf = new Map<string, string>();
  for (const c of certificates) {
    if (c.publicKeySha256 && !serialOf.has(c.publicKeySha256)) serialOf.set(c.publicKeySha256, c.serial);
  }
  if (serialOf.size === 0) return [];
  const { rows } = await tx.query<{ public_key_sha256: string }>(
    `INSERT INTO compromised_keys (public_key_sha256, serial, reported_at, reported_by_kind, reported_by_id)
     SELECT k, s, $3, $4, $5 FROM unnest($1::text[], $2::text[]) AS t(k, s)
     ON CONFLICT (public_key_sha256) DO NOTHING
     RETURNING public_key_sha256`,
    [[...serialOf.keys()], [...serialOf.values()], at, actor.kind, actor.id],
  );
  return rows.map((r) => r.public_key_sha256);
}
