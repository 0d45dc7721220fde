import { spawn } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, rmSync, symlinkSync } from "node:fs";
import { join, resolve } from "node:path";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import type { WorkloadSpec } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { nativeExecProbe, type ExecProbeRunner } from "../health-checks.js";
import type { RotatingLog } from "../log-rotation.js";
import {
  PermanentLaunchError,
  type ExitInfo,
  type LaunchedWorkload,
  type Launcher,
  type Preflight,
} from "./launcher.js";

/** Variables of the agent's own environment a workload inherits; everything else comes from its spec. */
const INHERITED_ENV = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

export interface NativeLauncherOptions {
  spec: WorkloadSpec;
  generation: bigint;
  /** Per-workload directory under the state directory (the default working directory). */
  workDir: string;
  /** Receives the process's stdout and stderr and the supervisor's notes. */
  log: RotatingLog;
}

/**
 * Native processes: the spec's command and args in its own process group (so stopping it reaches its
 * children too), with only the spec's environment on top of a few inherited basics, output to a
 * size-rotated log file.
 */
export class NativeLauncher implements Launcher {
  private readonly log: RotatingLog;
  private readonly cwd: string;
  private readonly env: NodeJS.ProcessEnv;
  readonly execProbe: ExecProbeRunner;

  constructor(private readonly options: NativeLauncherOptions) {
    const { spec } = options;
    this.log = options.log;
    this.cwd = spec.workingDir ? resolve(spec.workingDir) : options.workDir;
    this.env = {
      ...Object.fromEntries(
        INHERITED_ENV.filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]]),
      ),
      ...spec.env,
      FABRIC_WORKLOAD_ID: spec.id,
      FABRIC_WORKLOAD_GENERATION: String(options.generation),
    };
    this.execProbe = nativeExecProbe({ cwd: this.cwd, env: this.env });
  }

  async preflight(): Promise<Preflight> {
    const { spec } = this.options;
    if (spec.runtime !== Runtime.NATIVE) {
      return { verdict: "unsupported", message: `runtime ${spec.runtime} is not one this agent knows` };
    }
    if (!spec.command) return { verdict: "failed", message: "a native workload needs a command" };
    if (spec.mounts.length > 0 && spec.environment !== Environment.DEV) {
      return { verdict: "failed", message: "mounts are allowed only in the dev environment" };
    }
    if (!spec.workingDir) mkdirSync(this.options.workDir, { recursive: true, mode: 0o700 });
    else if (!existsSync(this.cwd)) {
      return { verdict: "failed", message: `working directory ${this.cwd} does not exist` };
    }
    try {
      for (const mount of spec.mounts) this.link(mount.source, mount.target);
    } catch (err) {
      return { verdict: "failed", message: (err as Error).message };
    }
    return undefined;
  }

  launch(): Promise<LaunchedWorkload> {
    const { spec } = this.options;
    return new Promise((resolveLaunch, reject) => {
      const child = spawn(spec.command, spec.args, {
        cwd: this.cwd,
        env: this.env,
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
      });
      child.stdout.on("data", (d: Buffer) => this.log.write(d));
      child.stderr.on("data", (d: Buffer) => this.log.write(d));
      const exited = new Promise<ExitInfo>((done) =>
        child.once("exit", (code, signal) => {
          // Whatever the process left behind in its group goes with it.
          signalGroup(child.pid, "SIGKILL");
          done({ code, signal });
        }),
      );
      child.once("error", (err: NodeJS.ErrnoException) => {
        reject(
          err.code === "ENOENT" || err.code === "EACCES"
            ? new PermanentLaunchError(
                `cannot run ${spec.command}: ${err.code === "ENOENT" ? "not found" : "permission denied"}`,
              )
            : err,
        );
      });
      child.once("spawn", () =>
        resolveLaunch({
          pid: child.pid,
          exited,
          terminate: async (graceMs) => {
            if (child.exitCode !== null || child.signalCode !== null) return;
            signalGroup(child.pid, "SIGTERM");
            const kill = setTimeout(() => signalGroup(child.pid, "SIGKILL"), graceMs);
            await exited;
            clearTimeout(kill);
          },
        }),
      );
    });
  }

  note(line: string): void {
    this.log.write(`${new Date().toISOString()} [fabric-agent] ${this.options.spec.id}: ${line}\n`);
  }

  close(): void {
    this.log.close();
  }

  /** Native "mounts" (dev only): the target path becomes a link to the host source path. */
  private link(source: string, target: string): void {
    const at = resolve(this.cwd, target);
    if (existsSync(at) && !lstatSync(at).isSymbolicLink()) {
      throw new Error(`mount target ${at} exists and is not a link`);
    }
    rmSync(at, { force: true });
    mkdirSync(join(at, ".."), { recursive: true });
    symlinkSync(source, at);
  }
}

function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}
