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
  /** When the certificate(s) would have expired anyway; after that the entry can be dropped. */
  notAfter: Date;
}

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

  /** Drops entries whose certificates have expired: an expired certificate fails TLS anyway. */
  prune(now = new Date()): void {
    for (const [serial, notAfter] of this.serials) if (notAfter < now) this.serials.delete(serial);
    for (const [key, p] of this.principals) if (p.notAfter < now) this.principals.delete(key);
  }

  /** Calls onRevoked once if the identity is revoked while watched; returns the unwatch function. */
  watch(identity: PresentedIdentity, onRevoked: () => void): () => void {
    const watcher = { identity, onRevoked };
    this.watchers.add(watcher);
    return () => void this.watchers.delete(watcher);
  }
}
