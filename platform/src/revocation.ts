/**
 * What this process refuses, fed by the CA's WatchRevocations stream: revoked certificate serials, and
 * principals revoked as a whole (every certificate of theirs issued at or before the revocation).
 * Open streams of an identity are told the moment it is revoked, so they are cut at once rather than at
 * their next message.
 */
export interface RevokedEntry {
  /** Empty for a principal-wide revocation. */
  serialHex?: string;
  /** "kind/id", e.g. "node/n-1"; required for principal-wide revocations. */
  principal?: string;
  revokedAt?: Date;
  /**
   * When the certificate(s) would have expired anyway; REVOCATION_RETENTION_MS after that the entry
   * can be dropped.
   */
  notAfter: Date;
}

/**
 * How long a revocation is kept after the notAfter of what it covers. Every call re-checks its
 * certificate's notAfter against this process's clock (authorization.ts), so locally an entry is moot
 * from notAfter on; the margin covers the clocks disagreeing: the CA decides what to list by the
 * database's clock, this process by its own, and a process whose clock runs behind would otherwise see a
 * certificate as still valid after its revocation was already forgotten. A day is far beyond the skew
 * of any host whose clock is kept at all, and revocations are few, so the memory is negligible. Keeping
 * entries (rather than tracking which connections still hold a serial) also covers connections opened
 * later with a copy of the same certificate.
 */
export const REVOCATION_RETENTION_MS = 86_400_000;

/** The identity a caller presented, as far as revocation cares. */
export interface PresentedIdentity {
  serialHex: string;
  kind: string;
  id: string;
  notBefore: Date;
}

interface Watcher {
  identity: PresentedIdentity;
  onRevoked: () => void;
}

export const principalKey = (kind: string, id: string) => `${kind}/${id}`;

export class RevocationSet {
  private readonly serials = new Map<string, Date>();
  private readonly principals = new Map<string, { revokedAt: Date; notAfter: Date }>();
  private readonly watchers = new Set<Watcher>();
  /** The last feed version applied (0 before the first list). */
  version = 0n;

  isRevoked(identity: PresentedIdentity): boolean {
    if (this.serials.has(identity.serialHex.toLowerCase())) return true;
    const cutoff = this.principals.get(principalKey(identity.kind, identity.id));
    return cutoff !== undefined && identity.notBefore <= cutoff.revokedAt;
  }

  get size(): number {
    return this.serials.size + this.principals.size;
  }

  add(entry: RevokedEntry): void {
    if (entry.serialHex) this.serials.set(entry.serialHex.toLowerCase(), entry.notAfter);
    else if (entry.principal) {
      this.principals.set(entry.principal, {
        revokedAt: entry.revokedAt ?? new Date(),
        notAfter: entry.notAfter,
      });
    }
    for (const w of this.watchers) {
      if (this.isRevoked(w.identity)) {
        this.watchers.delete(w);
        w.onRevoked();
      }
    }
  }

  /** Replaces the whole set, as after a relist; watchers of identities in the new set are cut. */
  replace(entries: RevokedEntry[], version: bigint): void {
    this.serials.clear();
    this.principals.clear();
    for (const e of entries) this.add(e);
    this.version = version;
  }

  /**
   * Drops entries whose certificates expired more than REVOCATION_RETENTION_MS before `now`: by then
   * every call presenting them is refused as expired, whichever clock issued or revoked them.
   */
  prune(now: Date): void {
    const cutoff = now.getTime() - REVOCATION_RETENTION_MS;
    for (const [serial, notAfter] of this.serials)
      if (notAfter.getTime() < cutoff) this.serials.delete(serial);
    for (const [key, p] of this.principals) if (p.notAfter.getTime() < cutoff) this.principals.delete(key);
  }

  /** Calls onRevoked once if the identity is revoked while watched; returns the unwatch function. */
  watch(identity: PresentedIdentity, onRevoked: () => void): () => void {
    const watcher = { identity, onRevoked };
    this.watchers.add(watcher);
    return () => void this.watchers.delete(watcher);
  }
}
