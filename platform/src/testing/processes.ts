import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

/** A port free right now on 127.0.0.1 (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export interface ChildService {
  process: ChildProcess;
  /** Everything the child printed, for assertions and for failure messages. */
  output(): string;
  /** SIGTERM, then SIGKILL after the grace period; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
  /** SIGKILL now. */
  kill(): Promise<void>;
  exited: Promise<number | null>;
}

const TSX = join(dirname(createRequire(import.meta.url).resolve("tsx/package.json")), "dist/loader.mjs");

/**
 * Runs a TypeScript entry point as a real child process (node --import tsx), with the given environment
 * on top of ours. Waits for `readyUrl` (a plain /readyz) to answer 200 when given.
 */
export async function spawnTs(
  entry: string,
  options: { env?: Record<string, string>; args?: string[]; readyUrl?: string; timeoutMs?: number } = {},
): Promise<ChildService> {
  // FABRIC_CHILD_NODE_ARGS adds node flags to every spawned child, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p"
  // to profile services under a test or bench (NODE_OPTIONS refuses --cpu-prof).
  const nodeArgs = process.env.FABRIC_CHILD_NODE_ARGS?.split(" ").filter(Boolean) ?? [];
  const child = spawn(process.execPath, [...nodeArgs, "--import", TSX, entry, ...(options.args ?? [])], {
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const service: ChildService = {
    process: child,
    output: () => out,
    exited,
    async stop(graceMs = 5_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
  if (options.readyUrl) {
    try {
      await waitForReady(options.readyUrl, options.timeoutMs ?? 30_000, exited);
    } catch (err) {
      await service.kill();
      throw new Error(`${entry} did not become ready: ${(err as Error).message}\n--- output ---\n${out}`);
    }
  }
  return service;
}

export async function waitForReady(url: string, timeoutMs: number, exited?: Promise<unknown>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void exited?.then(() => (gone = true));
  while (Date.now() < deadline) {
    if (gone) throw new Error("the process exited");
    try {
      const res = await fetch(url);
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${url}`);
}
