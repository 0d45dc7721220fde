import { Code, ConnectError } from "@connectrpc/connect";
import type { Clock, ClockTimer } from "./clock.js";
import type { Principal } from "./principal.js";
import type { RevocationSet } from "./revocation.js";

/**
 * How often every open stream re-reads the clock and the revoked set, besides the timer at its
 * certificate's notAfter and the revocation watch: a wall-clock step moves notAfter closer without
 * moving the timer, and this bounds how long such a stream outlives its certificate.
 */
export const STREAM_RECHECK_MS = 5_000;

function describe(principal: Principal): string {
  return `certificate ${principal.serialHex} of ${principal.kind} "${principal.id}"`;
}

/**
 * Why the principal may not make a call at `now`, or undefined when it may. TLS checks validity only at
 * the handshake and a connection's principal is parsed once, so every call (and every message of a
 * stream) asks again. The certificate is valid from notBefore through notAfter inclusive (RFC 5280).
 * Messages carry no current time, so repeated refusals of one certificate read the same (refusal audit
 * aggregates identical ones).
 */
export function identityProblem(
  principal: Principal,
  revocations: RevocationSet,
  now: number,
): string | undefined {
  if (now > principal.notAfter.getTime()) {
    return `${describe(principal)} expired at ${principal.notAfter.toISOString()}; renew or re-enroll to get a new identity`;
  }
  if (now < principal.notBefore.getTime()) {
    return `${describe(principal)} is not valid before ${principal.notBefore.toISOString()}; check the caller's and the server's clocks`;
  }
  if (revocations.isRevoked(principal)) {
    return `${describe(principal)} has been revoked; re-enroll to get a new identity`;
  }
  return undefined;
}

/**
 * Keeps one periodic timer for all open guards of a server, rather than one per stream, and only while
 * there are any.
 */
export class GuardSweeper {
  private readonly guards = new Set<IdentityGuard>();
  private timer: ClockTimer | undefined;

  constructor(
    private readonly clock: Clock,
    private readonly intervalMs: number,
  ) {}

  add(guard: IdentityGuard): void {
    this.guards.add(guard);
    this.timer ??= this.clock.setTimeout(() => this.sweep(), this.intervalMs);
  }

  delete(guard: IdentityGuard): void {
    this.guards.delete(guard);
    if (this.guards.size === 0 && this.timer) {
      this.clock.clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  private sweep(): void {
    this.timer = undefined;
    for (const guard of this.guards) guard.recheck();
    if (this.guards.size > 0) this.timer = this.clock.setTimeout(() => this.sweep(), this.intervalMs);
  }
}

/**
 * The validity of one streaming call's identity for as long as the call lasts. It fails (once, for
 * good) when the certificate expires (a timer at the first instant past notAfter), when its serial or
 * principal is revoked (the revoked set's watch), or when a periodic or per-message re-check finds it
 * invalid; whatever waits on the call through `race` is then woken with Unauthenticated.
 */
export class IdentityGuard {
  private failure: ConnectError | undefined;
  // One waker per pending wait, removed when that wait settles: racing every message against one
  // long-lived promise would leave a reaction on it per message for the whole life of the stream.
  private readonly wakers = new Set<() => void>();
  private readonly expiry: ClockTimer;
  private readonly unwatch: () => void;
  private disposed = false;

  constructor(
    private readonly principal: Principal,
    private readonly revocations: RevocationSet,
    private readonly clock: Clock,
    private readonly sweeper: GuardSweeper,
  ) {
    this.unwatch = revocations.watch(principal, () => this.recheck());
    this.expiry = clock.setTimeout(() => this.recheck(), principal.notAfter.getTime() + 1 - clock.now());
    sweeper.add(this);
    this.recheck();
  }

  /** Re-reads the clock and the revoked set; fails the guard if the identity is no longer valid. */
  recheck(): void {
    if (this.failure) return;
    const problem = identityProblem(this.principal, this.revocations, this.clock.now());
    if (problem) this.fail(problem);
  }

  /** Throws the failure if the identity is (now) invalid. */
  check(): void {
    this.recheck();
    if (this.failure) throw this.failure;
  }

  /** Settles like `step`, unless the guard fails first. */
  race<T>(step: Promise<T>): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<T>((resolve, reject) => {
      const wake = () => reject(this.failure);
      this.wakers.add(wake);
      step.then(
        (value) => {
          this.wakers.delete(wake);
          resolve(value);
        },
        (err: unknown) => {
          this.wakers.delete(wake);
          reject(err);
        },
      );
    });
  }

  /** Stops the timers and the watch; the call is over. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.clock.clearTimeout(this.expiry);
    this.unwatch();
    this.sweeper.delete(this);
  }

  private fail(problem: string): void {
    this.failure = new ConnectError(`${problem}. This call is closed`, Code.Unauthenticated);
    this.dispose();
    for (const wake of this.wakers) wake();
    this.wakers.clear();
  }
}
