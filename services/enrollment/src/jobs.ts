import type { Logger } from "@fabric/platform";

/**
 * Runs `fn` now and then every `intervalMs` until `signal` aborts, one run at a time. A failing run is
 * logged and retried at the next tick: background jobs must never take the process down.
 */
export function every(
  name: string,
  intervalMs: number,
  signal: AbortSignal,
  logger: Logger,
  fn: () => Promise<unknown>,
): Promise<void> {
  return (async () => {
    while (!signal.aborted) {
      try {
        await fn();
      } catch (err) {
        if (signal.aborted) return;
        logger.warn({ job: name, err: (err as Error).message }, "background job failed; retrying next tick");
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, intervalMs);
        function done() {
          clearTimeout(timer);
          signal.removeEventListener("abort", done);
          resolve();
        }
        signal.addEventListener("abort", done, { once: true });
      });
    }
  })();
}
