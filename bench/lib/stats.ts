// Figures as every bench prints them: rates with thousands separators, percentiles, and the one line per
// measurement that carries its goal and its ratio to a baseline measured in the same run.

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

export function summarize(samples: number[]): { p50: number; p99: number; max: number; n: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    max: sorted.at(-1) ?? Number.NaN,
    n: sorted.length,
  };
}

export const count = (n: number) => Math.round(n).toLocaleString("en-US");
export const ms = (n: number) => `${n < 10 ? n.toFixed(2) : n.toFixed(1)} ms`;

/** `name: figure (goal …) — ratio to <baseline> measured in this run: r`; the goal may be omitted. */
export function line(
  name: string,
  figure: string,
  goal: string | undefined,
  baseline: string,
  ratio: number,
): string {
  return `${name}: ${figure}${goal ? ` (goal ${goal})` : ""} — ratio to ${baseline} measured in this run: ${ratio.toFixed(2)}`;
}

/** Whether BENCH_QUICK=1 (the CI smoke): small sizes, short durations. */
export const quick = process.env.BENCH_QUICK === "1";
