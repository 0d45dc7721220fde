import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** tsx's ESM loader, by absolute path: children start from any working directory. */
const TSX_LOADER = join(
  dirname(createRequire(import.meta.url).resolve("tsx/package.json")),
  "dist/loader.mjs",
);

/** The process entry of a service package: main.ts next to the index its package exports. */
export function serviceMain(name: string): string {
  return join(dirname(fileURLToPath(import.meta.resolve(`@fabric/${name}`))), "main.ts");
}

/** A long-running child `fabric up` supervises; its output goes to a log file, not to memory. */
export interface Supervised {
  name: string;
  child: ChildProcess;
  logFile: string;
  /** Resolves when the process has exited, with its exit code (or the signal that ended it). */
  exited: Promise<string>;
  running(): boolean;
  /** SIGTERM, then SIGKILL after the grace period. */
  stop(graceMs: number): Promise<string>;
  kill(): void;
}

/**
 * Runs a TypeScript entry point under node + tsx, appending its stdout and stderr to `logFile` (0600:
 * logs are redacted, but they are the operator's business only).
 */
export function spawnTypeScript(
  name: string,
  entry: string,
  options: { env: NodeJS.ProcessEnv; logFile: string; detached?: boolean; ipc?: boolean },
): Supervised {
  const log = openSync(options.logFile, "a", 0o600);
  const spawnOptions: SpawnOptions = {
    env: options.env,
    stdio: ["ignore", log, log, ...(options.ipc ? (["ipc"] as const) : [])],
    detached: options.detached ?? false,
  };
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, ["--import", TSX_LOADER, entry], spawnOptions);
  } finally {
    closeSync(log); // the child holds its own copy
  }
  const exited = new Promise<string>((resolve) =>
    child.once("exit", (code, signal) => resolve(signal ? `signal ${signal}` : `code ${code}`)),
  );
  const running = () => child.exitCode === null && child.signalCode === null;
  return {
    name,
    child,
    logFile: options.logFile,
    exited,
    running,
    async stop(graceMs) {
      if (!running()) return exited;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const how = await exited;
      clearTimeout(timer);
      return how;
    },
    kill() {
      if (running()) child.kill("SIGKILL");
    },
  };
}

/** The last lines of a log file, for a failure message. */
export function logTail(file: string, lines = 20): string {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no output)";
  }
}
