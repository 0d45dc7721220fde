import { setTimeout as sleep } from "node:timers/promises";
import type { Supervised } from "./child-processes.js";

const POLL_MS = 200;

/**
 * Waits until `url` (a plain /readyz) answers 200. Fails as soon as the process exits, when the time
 * is up, or when `signal` aborts (Ctrl-C during start-up).
 */
export async function waitUntilReady(
  url: string,
  process: Supervised,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited: string | undefined;
  void process.exited.then((how) => (exited = how));
  while (!signal.aborted) {
    if (exited) throw new Error(`it exited (${exited}) before it was ready`);
    if (Date.now() > deadline) throw new Error(`it was not ready after ${timeoutMs / 1000} s`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(POLL_MS);
  }
  throw new Error("interrupted");
}
