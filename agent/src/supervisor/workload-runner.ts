import { Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { WorkloadState, type WorkloadSpec } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { sleep } from "../backoff.js";
import { durationMs } from "../durations.js";
import { HealthMonitor, healthSettings, probeFor } from "../health-checks.js";
import { PermanentLaunchError, type ExitInfo, type LaunchedWorkload, type Launcher } from "./launcher.js";
import { RestartTracker, restartSettings } from "./restart-policy.js";

export type HealthView = "none" | "unknown" | "healthy" | "unhealthy";

/** What the agent reports and shows about one workload. */
export interface WorkloadView {
  id: string;
  generation: bigint;
  runtime: "native" | "container";
  state: WorkloadState;
  pid: number | undefined;
  restarts: number;
  /** Exit status of the last exit; 0 if none yet, -1 if killed by a signal. */
  lastExitCode: number;
  health: HealthView;
  message: string;
  stateChangedAt: Date;
}

const DEFAULT_STOP_GRACE_MS = 10_000;
const MAX_STOP_GRACE_MS = 300_000;

/**
 * Runs one generation of one workload: starts it, restarts it after exits as its policy says (with
 * backoff and crash-loop detection), runs its health check, and stops it with SIGTERM then SIGKILL after
 * the grace period. A new spec or generation gets a new runner.
 */
export class WorkloadRunner {
  private state = WorkloadState.UNSPECIFIED;
  private message = "";
  private stateChangedAt = new Date();
  private health: HealthView;
  private lastExitCode = 0;
  private current: LaunchedWorkload | undefined;
  private monitor: HealthMonitor | undefined;
  private readonly tracker;
  private readonly stopSignal = new AbortController();
  private loop: Promise<void> | undefined;

  constructor(
    readonly spec: WorkloadSpec,
    readonly generation: bigint,
    private readonly launcher: Launcher,
    private readonly onChange: (view: WorkloadView) => void,
  ) {
    this.tracker = new RestartTracker(restartSettings(spec.restartPolicy));
    this.health = spec.healthCheck?.probe.case ? "unknown" : "none";
  }

  get id(): string {
    return this.spec.id;
  }

  get stopping(): boolean {
    return this.stopSignal.signal.aborted;
  }

  /** Starts supervising; a runner stopped before it started never launches anything. */
  start(): void {
    if (this.loop || this.stopping) return;
    this.loop = this.run();
  }

  async stop(reason: string): Promise<void> {
    if (!this.stopping) this.stopSignal.abort();
    this.monitor?.stop();
    const running = this.current;
    if (running) {
      this.launcher.note(`stopping (${reason})`);
      await running.terminate(this.graceMs());
    }
    await this.loop;
    this.set(WorkloadState.STOPPED, reason);
    this.launcher.close();
  }

  view(): WorkloadView {
    return {
      id: this.spec.id,
      generation: this.generation,
      runtime: this.spec.runtime === Runtime.CONTAINER ? "container" : "native",
      state: this.state,
      pid: this.current?.pid,
      restarts: this.tracker.count,
      lastExitCode: this.lastExitCode,
      health: this.health,
      message: this.message,
      stateChangedAt: this.stateChangedAt,
    };
  }

  private graceMs(): number {
    return Math.min(MAX_STOP_GRACE_MS, durationMs(this.spec.stopGracePeriod, DEFAULT_STOP_GRACE_MS));
  }

  private async run(): Promise<void> {
    const refusal = await this.launcher.preflight();
    if (refusal) {
      this.set(
        refusal.verdict === "unsupported" ? WorkloadState.UNSUPPORTED : WorkloadState.FAILED,
        refusal.message,
      );
      return;
    }
    for (;;) {
      if (this.stopping) return;
      this.set(WorkloadState.STARTING, this.tracker.count > 0 ? `restart ${this.tracker.count}` : "starting");
      let launched: LaunchedWorkload;
      try {
        launched = await this.launcher.launch();
      } catch (err) {
        if (this.stopping) return;
        if (err instanceof PermanentLaunchError) {
          this.set(WorkloadState.FAILED, err.message);
          return;
        }
        // A start that may succeed later (e.g. a busy docker daemon) counts as a failed run.
        launched = {
          pid: undefined,
          exited: Promise.resolve({ code: null, signal: null }),
          terminate: async () => {},
        };
        this.launcher.note(`start failed: ${(err as Error).message}`);
      }
      if (this.stopping) {
        // stop() ran while the launch was under way and found nothing to terminate yet.
        await launched.terminate(this.graceMs());
        return;
      }
      const startedAt = Date.now();
      this.current = launched;
      if (launched.pid !== undefined) {
        this.launcher.note(`started, pid ${launched.pid}`);
        this.watchHealth();
        if (this.health === "none") this.set(WorkloadState.RUNNING, "running");
        else this.changed();
      }
      const exit = await launched.exited;
      this.monitor?.stop();
      this.monitor = undefined;
      this.current = undefined;
      if (this.stopping) return;
      this.lastExitCode = exit.signal ? -1 : (exit.code ?? -1);
      const how = describeExit(exit);
      this.launcher.note(`exited (${how})`);
      if (this.health !== "none") this.health = "unknown";
      const decision = this.tracker.onExit({ ...exit, uptimeMs: Date.now() - startedAt });
      if (!decision.restart) {
        const clean = exit.code === 0 && exit.signal === null;
        this.set(
          clean ? WorkloadState.STOPPED : WorkloadState.FAILED,
          `exited (${how}); not restarted by policy`,
        );
        return;
      }
      const wait = `restarting in ${(decision.delayMs / 1000).toFixed(1)} s`;
      this.set(
        decision.crashLoop ? WorkloadState.CRASH_LOOP : WorkloadState.STARTING,
        decision.crashLoop
          ? `crash loop: ${this.tracker.count} restarts; exited (${how}); ${wait}`
          : `exited (${how}); ${wait}`,
      );
      await sleep(decision.delayMs, this.stopSignal.signal);
    }
  }

  private watchHealth(): void {
    const check = this.spec.healthCheck;
    if (!check?.probe.case) return;
    this.health = "unknown";
    this.monitor = new HealthMonitor(
      probeFor(check, this.launcher.execProbe),
      healthSettings(check),
      (healthy, message) => {
        if (this.stopping || !this.current) return;
        this.health = healthy ? "healthy" : "unhealthy";
        this.set(healthy ? WorkloadState.HEALTHY : WorkloadState.UNHEALTHY, message);
      },
    );
    this.monitor.start();
  }

  private set(state: WorkloadState, message: string): void {
    if (state !== this.state) this.stateChangedAt = new Date();
    this.state = state;
    this.message = message.slice(0, 1024);
    this.changed();
  }

  private changed(): void {
    this.onChange(this.view());
  }
}

function describeExit(exit: ExitInfo): string {
  return exit.signal ? `killed by ${exit.signal}` : `status ${exit.code ?? "unknown"}`;
}
