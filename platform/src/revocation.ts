/**
 * The set of revoked certificate serials this process refuses, fed by the CA's WatchRevocations stream.
 * Watchers (open streams of a principal) are told the moment their serial is revoked, so the stream can
 * be cut at once rather than at its next message.
 */
export interface RevokedEntry {
  serialHex: string;
  /** When the certificate would have expired anyway; after that the entry can be dropped. */
  notAfter: Date;
}

export class RevocationSet {
  private readonly revoked = new Map<string, Date>();
  private readonly watchers = new Map<string, Set<() => void>>();
  /** The last feed version applied (0 before the first list). */
  version = 0n;

  has(serialHex: string): boolean {
    return this.revoked.has(serialHex.toLowerCase());
  }

  get size(): number {
    return this.revoked.size;
  }

  add(entry: RevokedEntry): void {
    const serial = entry.serialHex.toLowerCase();
    this.revoked.set(serial, entry.notAfter);
    const watchers = this.watchers.get(serial);
    if (watchers) {
      this.watchers.delete(serial);
      for (const cut of watchers) cut();
    }
  }

  /** Replaces the whole set, as after a relist; watchers of serials in the new set are cut. */
  replace(entries: RevokedEntry[], version: bigint): void {
    this.revoked.clear();
    for (const e of entries) this.add(e);
    this.version = version;
  }

  /** Drops entries whose certificates have expired: an expired certificate fails TLS anyway. */
  prune(now = new Date()): void {
    for (const [serial, notAfter] of this.revoked) if (notAfter < now) this.revoked.delete(serial);
  }

  /** Calls onRevoked once if the serial is revoked while watched; returns the unwatch function. */
  watch(serialHex: string, onRevoked: () => void): () => void {
    const serial = serialHex.toLowerCase();
    let set = this.watchers.get(serial);
    if (!set) this.watchers.set(serial, (set = new Set()));
    set.add(onRevoked);
    return () => {
      const current = this.watchers.get(serial);
      current?.delete(onRevoked);
      if (current?.size === 0) this.watchers.delete(serial);
    };
  }
}
