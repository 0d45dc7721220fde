import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { chmodSync, existsSync, lchownSync, lstatSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import type { WorkloadSpec } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { nativeExecProbe, type ExecProbeRunner } from "../health-checks.js";
import { isWithin, mountRefusal, ownDirectory, realPath } from "../host-paths.js";
import type { RotatingLog } from "../log-rotation.js";
import {
  PermanentLaunchError,
  type ExitInfo,
  type LaunchedWorkload,
  type Launcher,
  type Preflight,
} from "./launcher.js";
import { workloadEnvRefusal } from "./workload-env.js";
import type { WorkloadUser } from "./workload-user.js";

/**
 * Variables of the agent's own environment a workload inherits; everything else comes from its spec.
 * HOME is not among them: a workload's home is its own directory.
 */
const INHERITED_ENV = ["PATH", "LANG", "LC_ALL", "TZ", "TMPDIR"];

export interface NativeLauncherOptions {
  spec: WorkloadSpec;
  generation: bigint;
  /**
   * Where the workloads' own directories live, outside the state directory: this one's is
   * `<workloadRoot>/<id>`, its HOME and default working directory, owned by the workload user.
   */
  workloadRoot: string;
  /** The agent's state directory, which no workload may work in or mount. */
  stateDir: string;
  /** Who the process runs as. */
  user: WorkloadUser;
  /** Receives the process's stdout and stderr and the supervisor's notes. */
  log: RotatingLog;
}

/**
 * Native processes: the spec's command and args as the workload user (never the agent's own, which
 * holds the node's key), in its own process group (so stopping it reaches its children too), with only
 * the spec's environment on top of a few inherited basics, output to a size-rotated log file.
 */
export class NativeLauncher implements Launcher {
  private readonly log: RotatingLog;
  private readonly home: string;
  private readonly cwd: string;
  private readonly env: NodeJS.ProcessEnv;
  /** uid and gid for spawn when the agent switches users; empty when it runs workloads as itself. */
  private readonly ids: Pick<SpawnOptions, "uid" | "gid">;
  /**
   * Whether the process must enter its working directory itself: libuv changes directory before it
   * switches users, so a directory only root may enter (/root, say) would be handed to the workload.
   */
  private readonly entersItself: boolean;
  readonly execProbe: ExecProbeRunner;

  constructor(private readonly options: NativeLauncherOptions) {
    const { spec, user } = options;
    this.log = options.log;
    this.home = join(options.workloadRoot, spec.id);
    this.cwd = spec.workingDir ? realPath(spec.workingDir) : this.home;
    this.ids = user.mode === "separate" ? { uid: user.uid, gid: user.gid } : {};
    this.env = {
      ...Object.fromEntries(
        INHERITED_ENV.filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]]),
      ),
      ...spec.env,
      HOME: this.home,
      FABRIC_WORKLOAD_ID: spec.id,
      FABRIC_WORKLOAD_GENERATION: String(options.generation),
    };
    this.entersItself = user.mode === "separate" && this.cwd !== this.home;
    this.execProbe = nativeExecProbe((file, args) => this.start(file, args, { stdio: "ignore" }));
  }

  async preflight(): Promise<Preflight> {
    const { spec, user, stateDir, workloadRoot } = this.options;
    if (spec.runtime !== Runtime.NATIVE) {
      return { verdict: "unsupported", message: `runtime ${spec.runtime} is not one this agent knows` };
    }
    if (user.mode === "refused") return { verdict: "unsupported", message: user.reason };
    if (!spec.command) return { verdict: "failed", message: "a native workload needs a command" };
    // tst and pro run an immutable, digest-pinned image; a host command is neither.
    if (spec.environment !== Environment.DEV) {
      return {
        verdict: "failed",
        message: "native workloads run only in dev; tst and pro run a container image",
      };
    }
    const refusal =
      workloadEnvRefusal(spec.env) ??
      mountRefusal(spec.mounts, [stateDir, workloadRoot]) ??
      (isWithin(this.cwd, realPath(stateDir))
        ? `working directory ${spec.workingDir} is inside the agent's state directory; refused`
        : undefined);
    if (refusal) return { verdict: "failed", message: refusal };
    try {
      this.makeHome();
    } catch (err) {
      return { verdict: "failed", message: `cannot prepare ${this.home}: ${(err as Error).message}` };
    }
    if (!existsSync(this.cwd)) {
      return { verdict: "failed", message: `working directory ${this.cwd} does not exist` };
    }
    const linked = await this.linkMounts();
    return linked ? { verdict: "failed", message: linked } : undefined;
  }

  launch(): Promise<LaunchedWorkload> {
    const { spec } = this.options;
    return new Promise((resolveLaunch, reject) => {
      const child = this.start(spec.command, spec.args, {
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
      });
      child.stdout!.on("data", (d: Buffer) => this.log.write(d));
      child.stderr!.on("data", (d: Buffer) => this.log.write(d));
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

  /** Spawns `file args` as the workload: its user, environment and working directory. */
  private start(file: string, args: string[], options: SpawnOptions): ChildProcess {
    const common = { ...options, env: this.env, ...this.ids };
    if (!this.entersItself) return spawn(file, args, { ...common, cwd: this.cwd });
    // Started in its own directory, the shell enters the working directory as the workload user, then
    // becomes the command (PATH lookup as usual); a directory it may not enter ends it with status 126.
    return spawn(
      "/bin/sh",
      ["-c", 'cd -- "$1" || exit 126; shift; exec "$@"', "fabric-workload", this.cwd, file, ...args],
      {
        ...common,
        cwd: this.home,
      },
    );
  }

  note(line: string): void {
    this.log.write(`${new Date().toISOString()} [fabric-agent] ${this.options.spec.id}: ${line}\n`);
  }

  close(): void {
    this.log.close();
  }

  /**
   * `<workloadRoot>/<id>`, 0700 and owned by the workload user. The root is the agent's and 0711, so a
   * workload reaches its own directory by name but cannot list or replace the others; the one it owns
   * must still be a real directory before it is chowned (chown follows links).
   */
  private makeHome(): void {
    ownDirectory(this.options.workloadRoot, 0o711);
    if (!existsSync(this.home)) mkdirSync(this.home, { mode: 0o700 });
    const st = lstatSync(this.home);
    if (st.isSymbolicLink() || !st.isDirectory()) throw new Error("it is not a directory");
    if (this.ids.uid !== undefined) lchownSync(this.home, this.ids.uid, this.ids.gid!);
    chmodSync(this.home, 0o700);
  }

  /**
   * Native "mounts" (dev only): each target, relative to the working directory, becomes a link to the
   * host source path. The links are made by a short-lived process running as the workload user, so
   * whatever the workload left in its directories (a link to /etc, say) cannot turn this into the agent
   * writing somewhere the workload could not.
   */
  private linkMounts(): Promise<string | undefined> {
    const { mounts } = this.options.spec;
    if (mounts.length === 0) return Promise.resolve(undefined);
    const pairs = JSON.stringify(mounts.map((m) => [m.source, m.target]));
    return new Promise((done) => {
      const child = this.start(process.execPath, ["-e", LINK_MOUNTS, pairs], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
      child.once("error", (err) => done(`cannot link the mounts: ${err.message}`));
      child.once("exit", (code) =>
        done(code === 0 ? undefined : stderr.trim().split("\n")[0] || `linking the mounts failed (${code})`),
      );
    });
  }
}

/** Run as the workload user: argv[1] is a JSON list of [source, target]. */
const LINK_MOUNTS = `
const { lstatSync, mkdirSync, rmSync, symlinkSync } = require("node:fs");
const { dirname, resolve } = require("node:path");
for (const [source, target] of JSON.parse(process.argv[1])) {
  const at = resolve(target);
  let existing;
  try { existing = lstatSync(at); } catch {}
  if (existing && !existing.isSymbolicLink()) {
    console.error("mount target " + at + " exists and is not a link");
    process.exit(1);
  }
  try {
    rmSync(at, { force: true });
    mkdirSync(dirname(at), { recursive: true });
    symlinkSync(source, at);
  } catch (err) {
    console.error("cannot link mount target " + at + ": " + err.code);
    process.exit(1);
  }
}`;

function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}
