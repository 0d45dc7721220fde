// The CI smoke of `npm run bench`: every benchmark end to end at its quick size (BENCH_QUICK=1), so a
// bench that no longer runs is caught here. Figures are printed, never asserted (DESIGN.md: performance
// is measured in bench/, not in tests).
import { spawn } from "node:child_process";
import { join } from "node:path";
import { expect, it } from "vitest";

const RUN_ALL = join(import.meta.dirname, "..", "run-all.ts");

it("npm run bench:smoke runs every benchmark to the end", { timeout: 600_000 }, async () => {
  const child = spawn(process.execPath, ["--import", "tsx", RUN_ALL], {
    env: { ...process.env, BENCH_QUICK: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  process.stdout.write(output);
  expect(code, output.slice(-4_000)).toBe(0);
});
