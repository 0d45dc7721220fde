import { performance } from "node:perf_hooks";

export interface LoopResult {
  /** Calls completed during the measured window. */
  done: number;
  failed: number;
  seconds: number;
  /** Latency of each measured call, ms. */
  latencies: number[];
  firstError?: string;
}

/**
 * `workers` concurrent loops each calling `call` back to back: a warm-up, then `seconds` measured, then
 * the calls in flight are allowed to finish. Every bench that compares two servers drives both with this,
 * so they see the same client concurrency.
 */
export async function closedLoop(options: {
  workers: number;
  warmupSeconds: number;
  seconds: number;
  call: (worker: number, i: number) => Promise<unknown>;
}): Promise<LoopResult> {
  let measuring = false;
  let stopping = false;
  const result: LoopResult = { done: 0, failed: 0, seconds: 0, latencies: [] };
  let next = 0;
  const loop = async (worker: number) => {
    while (!stopping) {
      const t0 = performance.now();
      try {
        await options.call(worker, next++);
        if (measuring) {
          result.done += 1;
          result.latencies.push(performance.now() - t0);
        }
      } catch (err) {
        result.failed += 1;
        result.firstError ??= (err as Error).message;
      }
    }
  };
  const loops = Array.from({ length: options.workers }, (_, w) => loop(w));
  await new Promise((r) => setTimeout(r, options.warmupSeconds * 1_000));
  measuring = true;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, options.seconds * 1_000));
  measuring = false;
  result.seconds = (performance.now() - t0) / 1_000;
  stopping = true;
  await Promise.all(loops);
  return result;
}
