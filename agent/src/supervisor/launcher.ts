import type { ExecProbeRunner } from "../health-checks.js";

/** How a launched workload ended. `signal` is set when it was killed by one. */
export interface ExitInfo {
  code: number | null;
  signal: string | null;
}

/** One running instance of a workload, native process or container. */
export interface LaunchedWorkload {
  pid: number | undefined;
  exited: Promise<ExitInfo>;
  /** Asks it to stop (SIGTERM / docker stop), kills it after `graceMs`; resolves once it is gone. */
  terminate(graceMs: number): Promise<void>;
}

/** Why a workload cannot run here at all: the node lacks what it needs, or the spec is unusable. */
export type Preflight = { verdict: "unsupported" | "failed"; message: string } | undefined;

/** A start that cannot succeed by retrying (command or image missing). */
export class PermanentLaunchError extends Error {
  override name = "PermanentLaunchError";
}

/** A runtime (native processes, docker containers) as the workload runner drives it. */
export interface Launcher {
  preflight(): Promise<Preflight>;
  launch(): Promise<LaunchedWorkload>;
  /** Runs an exec health probe next to the workload. */
  execProbe: ExecProbeRunner;
  /** Supervisor events ("started pid 42", "exited with status 1") into the workload's log. */
  note(line: string): void;
  close(): void;
}
