import { execFile } from "node:child_process";
import { Environment } from "@fabric/proto/fabric/common/v1/common_pb.js";
import type { WorkloadSpec } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { sleep } from "../backoff.js";
import type { ExecProbeRunner } from "../health-checks.js";
import { mountRefusal } from "../host-paths.js";
import type { RotatingLog } from "../log-rotation.js";
import {
  PermanentLaunchError,
  type ExitInfo,
  type LaunchedWorkload,
  type Launcher,
  type Preflight,
} from "./launcher.js";
import { workloadEnvRefusal } from "./workload-env.js";

interface DockerResult {
  ok: boolean;
  stdout: string;
  stderr: string;
}

/** Runs the docker CLI; never throws (a missing binary is a failed result). */
export function docker(dockerPath: string, args: string[], timeoutMs = 30_000): Promise<DockerResult> {
  return new Promise((resolve) => {
    execFile(dockerPath, args, { timeout: timeoutMs, maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({
        ok: !err,
        stdout: String(stdout).trim(),
        stderr: (String(stderr).trim() || (err ? err.message : "")).split("\n")[0]!.slice(0, 300),
      });
    });
  });
}

/**
 * Whether containers can run here: the docker CLI must reach an engine (`docker info` succeeds). A client
 * without an engine is not enough; such nodes report container workloads UNSUPPORTED.
 */
export async function dockerAvailability(dockerPath: string): Promise<string | undefined> {
  const info = await docker(dockerPath, ["info", "--format", "{{.ServerVersion}}"], 10_000);
  return info.ok
    ? undefined
    : `docker is not available on this node (docker info: ${info.stderr || "failed"})`;
}

/** The `docker run` arguments for a spec (host networking, so health probes reach it on 127.0.0.1). */
export function dockerRunArgs(spec: WorkloadSpec, generation: bigint): string[] {
  const args = [
    "run",
    "--detach",
    "--name",
    containerName(spec.id),
    "--label",
    `fabric.workload-id=${spec.id}`,
    "--label",
    `fabric.generation=${generation}`,
    "--network",
    "host",
  ];
  for (const [key, value] of Object.entries(spec.env)) args.push("--env", `${key}=${value}`);
  if (spec.workingDir) args.push("--workdir", spec.workingDir);
  if (spec.environment === Environment.DEV) {
    for (const m of spec.mounts) args.push("--volume", `${m.source}:${m.target}${m.readOnly ? ":ro" : ""}`);
  }
  if (spec.command) args.push("--entrypoint", spec.command);
  args.push(spec.image, ...spec.args);
  return args;
}

export const containerName = (workloadId: string) => `fabric-${workloadId}`;

const DIGEST_PINNED = /^[^\s@]+@sha256:[0-9a-f]{64}$/;

/**
 * The pro guard rule as the agent enforces it (the registry does too; a snapshot from an older one is
 * not trusted to have): a pro container runs a digest-pinned image exactly as it was built, so nothing
 * that replaces what the image runs (entrypoint, command, working directory) may be set.
 */
function proContainerRefusal(spec: WorkloadSpec): string | undefined {
  if (spec.environment !== Environment.PRO) return undefined;
  if (!DIGEST_PINNED.test(spec.image)) {
    return `pro images must be pinned by digest (name@sha256:<64 hex>), not ${JSON.stringify(spec.image)}`;
  }
  const overrides = [
    spec.command && "command (the entrypoint)",
    spec.args.length > 0 && "args (the image's command)",
    spec.workingDir && "working_dir",
  ].filter(Boolean);
  return overrides.length > 0
    ? `a pro image runs exactly as built; this spec overrides its ${overrides.join(", ")}`
    : undefined;
}

/** Containers through the docker CLI: `docker run -d`, polled with `docker inspect`, removed with `docker rm -f`. */
export class ContainerLauncher implements Launcher {
  private readonly name: string;
  readonly execProbe: ExecProbeRunner;

  constructor(
    private readonly options: {
      spec: WorkloadSpec;
      generation: bigint;
      dockerPath: string;
      /** Host paths no mount may expose: the agent's state directory and the workload root. */
      protectedPaths: string[];
      /** Supervisor events; the container's own output stays with docker (`docker logs`). */
      log: RotatingLog;
      pollMs?: number;
    },
  ) {
    this.name = containerName(options.spec.id);
    this.execProbe = async (command, timeoutMs) => {
      const res = await docker(options.dockerPath, ["exec", this.name, ...command], timeoutMs);
      return res.ok
        ? { ok: true, message: "exec probe passed" }
        : { ok: false, message: `exec probe failed: ${res.stderr}` };
    };
  }

  async preflight(): Promise<Preflight> {
    const { spec, dockerPath, protectedPaths } = this.options;
    const unavailable = await dockerAvailability(dockerPath);
    if (unavailable) return { verdict: "unsupported", message: unavailable };
    if (!spec.image) return { verdict: "failed", message: "a container workload needs an image" };
    // `docker run` would read an image reference starting with "-" as one of its own options.
    if (spec.image.startsWith("-")) {
      return { verdict: "failed", message: `${JSON.stringify(spec.image)} is not an image reference` };
    }
    if (spec.mounts.length > 0 && spec.environment !== Environment.DEV) {
      return { verdict: "failed", message: "mounts are allowed only in the dev environment" };
    }
    const refusal =
      proContainerRefusal(spec) ?? workloadEnvRefusal(spec.env) ?? mountRefusal(spec.mounts, protectedPaths);
    return refusal ? { verdict: "failed", message: refusal } : undefined;
  }

  async launch(): Promise<LaunchedWorkload> {
    const { spec, generation, dockerPath } = this.options;
    await docker(dockerPath, ["rm", "--force", this.name]);
    const run = await docker(dockerPath, dockerRunArgs(spec, generation), 300_000);
    if (!run.ok) throw new PermanentLaunchError(`docker run failed: ${run.stderr}`);
    const state = await this.inspect();
    let stopped = false;
    const exited = (async (): Promise<ExitInfo> => {
      for (;;) {
        const now = await this.inspect();
        if (!now) return { code: null, signal: "SIGKILL" };
        if (now.status === "exited" || now.status === "dead") return { code: now.exitCode, signal: null };
        if (stopped) return { code: null, signal: "SIGTERM" };
        await sleep(this.options.pollMs ?? 1_000);
      }
    })();
    return {
      pid: state?.pid || undefined,
      exited,
      terminate: async (graceMs) => {
        await docker(
          dockerPath,
          ["stop", "--time", String(Math.ceil(graceMs / 1000)), this.name],
          graceMs + 30_000,
        );
        await docker(dockerPath, ["rm", "--force", this.name]);
        stopped = true;
        await exited;
      },
    };
  }

  note(line: string): void {
    this.options.log.write(`${new Date().toISOString()} [fabric-agent] ${this.options.spec.id}: ${line}\n`);
  }

  close(): void {
    this.options.log.close();
  }

  private async inspect(): Promise<{ status: string; exitCode: number; pid: number } | undefined> {
    const res = await docker(this.options.dockerPath, [
      "inspect",
      "--format",
      "{{.State.Status}} {{.State.ExitCode}} {{.State.Pid}}",
      this.name,
    ]);
    if (!res.ok) return undefined;
    const [status = "", exitCode = "0", pid = "0"] = res.stdout.split(" ");
    return { status, exitCode: Number(exitCode), pid: Number(pid) };
  }
}
