/**
 * Time as the security checks see it: certificate validity, revocation retention, idle connections and
 * audit retries all read `now()` and schedule through one injectable clock, so tests drive them with a
 * FakeClock (platform/src/testing/clock.ts) instead of sleeping.
 *
 * `now()` is wall-clock time (what certificates' notBefore/notAfter are compared with); timers count
 * elapsed time like Node's, so a wall-clock step does not move them. Code that must notice a step (an
 * identity expiring because the clock jumped past its notAfter) re-reads `now()` periodically rather than
 * trusting one timer.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Runs `fn` once after `ms`. Timers never keep the process alive on their own. */
  setTimeout(fn: () => void, ms: number): ClockTimer;
  clearTimeout(timer: ClockTimer): void;
}

declare const clockTimer: unique symbol;
/** A pending timer of a Clock; only that clock's clearTimeout understands it. */
export type ClockTimer = { readonly [clockTimer]: true };

// Node fires a timeout longer than 2^31-1 ms after 1 ms (TimeoutOverflowWarning); certificates live for
// months, so longer waits are chained in steps of at most this.
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

interface SystemTimer {
  handle: NodeJS.Timeout;
}

/** The real clock: Date.now() and unref'd Node timers. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const timer: SystemTimer = { handle: undefined as unknown as NodeJS.Timeout };
    const arm = (remaining: number) => {
      const step = Math.min(Math.max(0, remaining), MAX_TIMEOUT_MS);
      timer.handle = setTimeout(() => (remaining > step ? arm(remaining - step) : fn()), step);
      timer.handle.unref();
    };
    arm(ms);
    return timer as unknown as ClockTimer;
  },
  clearTimeout(timer) {
    clearTimeout((timer as unknown as SystemTimer).handle);
  },
};

/** Resolves after `ms` on `clock`, or at once when the signal aborts. */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clock.clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = clock.setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
