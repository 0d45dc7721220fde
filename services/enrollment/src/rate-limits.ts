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
    const bucket = this.refilled(key, now);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Gives back a token taken for `key` (never above the burst). */
  give(key: string, now = Date.now()): void {
    const bucket = this.refilled(key, now);
    bucket.tokens = Math.min(this.burst, bucket.tokens + 1);
  }

  /** Forgets buckets that have refilled completely: they behave exactly like absent ones. */
  prune(now = Date.now()): void {
    for (const [key, bucket] of this.buckets) {
      const refill = ((now - bucket.at) / 1000) * this.ratePerSecond;
      if (bucket.tokens + refill >= this.burst) this.buckets.delete(key);
    }
  }

  private refilled(key: string, now: number): { tokens: number; at: number } {
    const bucket = this.buckets.get(key) ?? { tokens: this.burst, at: now };
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.ratePerSecond);
    bucket.at = now;
    this.buckets.set(key, bucket);
    return bucket;
  }
}

/** What a refused caller was refused for, summed per key between two audit flushes. */
export interface RefusalTally {
  action: string;
  /** `address` or the credential kind (`join-token`, `join-request`). */
  limitedBy: string;
  key: string;
  count: number;
}

/**
 * Credentials limited by their failures. A developer id has none here: its PIN locks after
 * FABRIC_PIN_MAX_ATTEMPTS wrong attempts, which is a stricter failure limit of its own.
 */
export type CredentialKind = "join-token" | "join-request";

export interface AnonymousLimitSettings {
  addressRatePerSecond: number;
  addressBurst: number;
  credentialRatePerSecond: number;
  credentialBurst: number;
}

/** One admitted anonymous attempt: `proven()` once it presented the right credential. */
export interface AddressTicket {
  proven(): void;
}

/**
 * The abuse limits of the anonymous RPCs (Join, WaitForApproval, BootstrapDeveloper), designed so that a
 * caller without the secret cannot lock its holder out:
 *
 * - Per source IP, a bucket that every attempt draws on before any work is done (so a flood is refused
 *   cheaply and concurrently in-flight attempts are bounded), and that an attempt which proves its
 *   credential (right token secret, right signature, right PIN) gives back. Only failures use it up: an
 *   attacker exhausts its own address, never the holder's — unless they share one (a NAT).
 * - Per credential (join token id, join request id), a bucket drawn on only by a wrong secret. It shapes
 *   the failures (beyond it a wrong secret is told ResourceExhausted and counted in the batched audit)
 *   but is never consulted for a right one: knowing a token id or request id is not enough to keep its
 *   holder out. The secrets themselves (256-bit token secrets, ECDSA signatures) cannot be guessed, so
 *   this limit costs guessing nothing it needs.
 *
 * Refusals are counted per key and written to audit in batches by the caller (a flood must not turn into
 * one database write per refused request).
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
   * Admits one attempt from `address` (`ip:port`) or throws ResourceExhausted. The port is ignored so
   * reconnecting does not reset the bucket; "" (address unknown) is not limited here.
   */
  admitAddress(action: string, address: string): AddressTicket {
    const ip = hostOf(address);
    if (!ip) return { proven() {} };
    if (!this.addresses.take(ip)) {
      this.count(action, "address", ip);
      throw resourceExhausted(
        `too many failed ${action} calls from ${ip}; slow down and retry in a few seconds`,
      );
    }
    let given = false;
    return {
      proven: () => {
        if (given) return;
        given = true;
        this.addresses.give(ip);
      },
    };
  }

  /**
   * The refusal for a wrong secret presented for this credential: `refusal` itself while the credential's
   * failure budget lasts, ResourceExhausted (tallied for audit) after that.
   */
  credentialFailed(action: string, kind: CredentialKind, id: string, refusal: Error): Error {
    if (this.credentials.take(`${kind}/${id}`)) return refusal;
    this.count(action, kind, id);
    return resourceExhausted(
      `too many failed ${action} calls for this ${kind.replace("-", " ")}; slow down and retry in a few seconds`,
    );
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
