import type { Logger } from "@fabric/platform";
import { Backoff, sleep } from "./backoff.js";

export interface ReconnectingStreamOptions {
  /** For logs: "router watch", "registry session". */
  name: string;
  logger: Logger;
  /** Ends the loop for good. */
  signal: AbortSignal;
  backoff: { baseMs: number; capMs: number };
  /**
   * Runs one stream until it ends or fails. Calls `established` once the stream has proved itself (its
   * first message arrived), which resets the backoff and marks the stream up.
   */
  attempt(signal: AbortSignal, established: () => void): Promise<void>;
  /** Up/down transitions, for status and heartbeat health. */
  onState(up: boolean): void;
  /** An error no reconnect can fix (revoked identity): the loop ends and hands it over. */
  isFatal(err: unknown): boolean;
  onFatal(err: unknown): void;
}

/**
 * Keeps one long-lived stream open: reconnects after every end or failure with exponential backoff and
 * full jitter, until the signal aborts or a fatal error arrives. `restart()` drops the current stream and
 * reconnects at once (after a renewal, so the stream runs on the new certificate).
 */
export class ReconnectingStream {
  private current = new AbortController();
  private skipWait = false;
  private up = false;
  readonly done: Promise<void>;

  constructor(private readonly options: ReconnectingStreamOptions) {
    this.done = this.loop();
  }

  restart(): void {
    this.skipWait = true;
    this.current.abort();
  }

  private async loop(): Promise<void> {
    const { options } = this;
    const backoff = new Backoff(options.backoff.baseMs, options.backoff.capMs);
    while (!options.signal.aborted) {
      this.current = new AbortController();
      const attempt = AbortSignal.any([options.signal, this.current.signal]);
      let failure: unknown;
      try {
        await options.attempt(attempt, () => {
          backoff.reset();
          this.setUp(true);
        });
      } catch (err) {
        failure = err;
      }
      this.setUp(false);
      if (options.signal.aborted) return;
      if (failure !== undefined && !attempt.aborted && options.isFatal(failure)) {
        options.onFatal(failure);
        return;
      }
      if (this.skipWait) {
        this.skipWait = false;
        continue;
      }
      const delay = backoff.next();
      options.logger.warn(
        {
          stream: options.name,
          err: failure === undefined ? "stream ended" : (failure as Error).message,
          retryInMs: Math.round(delay),
          attempt: backoff.attempts,
        },
        `${options.name} interrupted; reconnecting`,
      );
      await sleep(delay, options.signal);
    }
  }

  private setUp(up: boolean): void {
    if (up === this.up) return;
    this.up = up;
    this.options.onState(up);
  }
}
