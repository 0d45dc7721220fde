import { RestartMode, type RestartPolicy } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { durationMs } from "../durations.js";

export interface RestartSettings {
  mode: RestartMode;
  initialBackoffMs: number;
  maxBackoffMs: number;
  crashLoopThreshold: number;
  crashLoopWindowMs: number;
  resetAfterMs: number;
}

/** The contract's defaults: always restart, 1 s doubling to 5 min, crash loop at 5 restarts in 10 min. */
export function restartSettings(policy: RestartPolicy | undefined): RestartSettings {
  const initialBackoffMs = durationMs(policy?.initialBackoff, 1_000);
  return {
    mode: policy?.mode || RestartMode.ALWAYS,
    initialBackoffMs,
    maxBackoffMs: Math.max(initialBackoffMs, durationMs(policy?.maxBackoff, 300_000)),
    crashLoopThreshold: Math.max(1, policy?.crashLoopThreshold || 5),
    crashLoopWindowMs: durationMs(policy?.crashLoopWindow, 600_000),
    resetAfterMs: durationMs(policy?.resetAfter, 60_000),
  };
}

export type ExitDecision =
  | { restart: false }
  | {
      restart: true;
      delayMs: number;
      /** Restarts inside the crash-loop window reached the threshold. */
      crashLoop: boolean;
    };

/**
 * Decides what happens after a workload's process exits: whether the policy restarts it, after how long
 * (doubling per consecutive short-lived run, reset by a run that lasted `resetAfter`), and whether the
 * restarts within the window make it a crash loop, which waits the longest backoff each time.
 */
export class RestartTracker {
  private consecutive = 0;
  private total = 0;
  /** Restart times inside the crash-loop window, oldest first. */
  private recent: number[] = [];

  constructor(private readonly settings: RestartSettings) {}

  /** Restarts recorded since this generation started. */
  get count(): number {
    return this.total;
  }

  onExit(
    exit: { code: number | null; signal: string | null; uptimeMs: number },
    now = Date.now(),
  ): ExitDecision {
    const failed = exit.code !== 0 || exit.signal !== null;
    const wanted =
      this.settings.mode === RestartMode.ALWAYS || (this.settings.mode === RestartMode.ON_FAILURE && failed);
    if (!wanted) return { restart: false };
    if (exit.uptimeMs >= this.settings.resetAfterMs) this.consecutive = 0;
    this.total += 1;
    this.recent = [...this.recent.filter((t) => now - t <= this.settings.crashLoopWindowMs), now];
    const crashLoop = this.recent.length >= this.settings.crashLoopThreshold;
    const delayMs = crashLoop
      ? this.settings.maxBackoffMs
      : Math.min(this.settings.maxBackoffMs, this.settings.initialBackoffMs * 2 ** this.consecutive);
    this.consecutive += 1;
    return { restart: true, delayMs, crashLoop };
  }
}
