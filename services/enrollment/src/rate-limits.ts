import { resourceExhausted } from "@fabric/platform";

/** A token bucket per key: `ratePerSecond` sustained, up to `burst` at once. Kept in memory. */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
  ) {}

  /** Takes one token for `key`; false when the bucket is empty. */
  take(key: string, now = Date.now()): boolean {
    const bucket = this.buckets.get(key) ?? { tokens: this.burst, at: now };
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.ratePerSecond);
    bucket.at = now;
    this.buckets.set(key, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Forgets buckets that have refilled completely: they behave exactly like absent ones. */
  prune(now = Date.now()): void {
    for (const [key, bucket] of this.buckets) {
      const refill = ((now - bucket.at) / 1000) * this.ratePerSecond;
      if (bucket.tokens + refill >= this.burst) this.buckets.delete(key);
    }
  }
}

/** What a refused caller was refused for, summed per key between two audit flushes. */
export interface RefusalTally {
  action: string;
  /** `address` or the credential kind (`join-token`, `join-request`, `developer`). */
  limitedBy: string;
  key: string;
  count: number;
}

export type CredentialKind = "join-token" | "join-request" | "developer";

export interface AnonymousLimitSettings {
  addressRatePerSecond: number;
  addressBurst: number;
  credentialRatePerSecond: number;
  credentialBurst: number;
}

/**
 * The abuse limits of the anonymous RPCs: one bucket per source IP and one per credential (join token id,
 * join request id, developer id), so neither many addresses hammering one token nor one address trying
 * many tokens gets through. Refusals are counted per key and written to audit in batches by the caller
 * (a flood must not turn into one database write per refused request).
 */
export class AnonymousLimits {
  private readonly addresses: TokenBuckets;
  private readonly credentials: TokenBuckets;
  private tallies = new Map<string, RefusalTally>();

  constructor(settings: AnonymousLimitSettings) {
    this.addresses = new TokenBuckets(settings.addressRatePerSecond, settings.addressBurst);
    this.credentials = new TokenBuckets(settings.credentialRatePerSecond, settings.credentialBurst);
  }

  /**
   * Admits one call from `address` (`ip:port`) or throws ResourceExhausted. The port is ignored so
   * reconnecting does not reset the bucket; "" (address unknown) is not limited here.
   */
  admitAddress(action: string, address: string): void {
    const ip = hostOf(address);
    if (ip && !this.addresses.take(ip)) {
      this.count(action, "address", ip);
      throw resourceExhausted(`too many ${action} calls from ${ip}; slow down and retry in a few seconds`);
    }
  }

  /** Admits one call presenting this credential (whatever its address) or throws ResourceExhausted. */
  admitCredential(action: string, kind: CredentialKind, id: string): void {
    if (!this.credentials.take(`${kind}/${id}`)) {
      this.count(action, kind, id);
      throw resourceExhausted(
        `too many ${action} calls for this ${kind.replace("-", " ")}; slow down and retry in a few seconds`,
      );
    }
  }

  /** The refusals since the last call, for one audit event each. */
  drainRefusals(): RefusalTally[] {
    const out = [...this.tallies.values()];
    this.tallies = new Map();
    return out;
  }

  prune(): void {
    this.addresses.prune();
    this.credentials.prune();
  }

  private count(action: string, limitedBy: string, key: string): void {
    const id = `${action}\u0000${limitedBy}\u0000${key}`;
    const tally = this.tallies.get(id) ?? { action, limitedBy, key, count: 0 };
    tally.count += 1;
    this.tallies.set(id, tally);
  }
}

/** `10.0.0.1:5000` → `10.0.0.1`, `[::1]:5000` → `::1`, "" → "". */
function hostOf(address: string): string {
  if (!address) return "";
  const bracketed = /^\[([^\]]+)\]:\d+$/.exec(address);
  if (bracketed) return bracketed[1]!;
  const colon = address.lastIndexOf(":");
  return colon > 0 ? address.slice(0, colon) : address;
}
