// `npm run bench`: every benchmark, one after the other; `npm run bench:smoke` (BENCH_QUICK=1) is the
// CI smoke of the same (bench/test/smoke.test.ts). The benches in MINE share one control plane started
// here; every other bench/<name>/run.ts (issuance, fanout, routing) runs as its own process. Exits non-zero
// if any bench failed to run.
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { Fabric } from "../test/harness/fabric.js";
import { issuanceVsCfssl } from "./cfssl/run.js";
import { enrollmentStorm } from "./enrollment-storm/run.js";
import { fuzz } from "./fuzz/run.js";
import { benchFabric } from "./lib/fabric.js";
import { quick } from "./lib/stats.js";
import { reports } from "./reports/run.js";
import { revocation } from "./revocation/run.js";

const MINE: Record<string, (fabric: Fabric) => Promise<void>> = {
  cfssl: issuanceVsCfssl,
  "enrollment-storm": enrollmentStorm,
  reports,
  revocation,
  fuzz,
};
// Benches the issue names that belong to other owners; said so when absent.
const EXPECTED_ELSEWHERE = ["issuance", "fanout", "routing"];

function runFile(file: string): Promise<number | null> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", file], { stdio: "inherit", env: process.env });
    child.once("exit", (code) => resolve(code));
  });
}

const t0 = performance.now();
const failures: string[] = [];
const here = import.meta.dirname;
const others = readdirSync(here, { withFileTypes: true })
  .filter((d) => d.isDirectory() && !(d.name in MINE) && existsSync(join(here, d.name, "run.ts")))
  .map((d) => d.name)
  .sort();
for (const name of EXPECTED_ELSEWHERE.filter((n) => !others.includes(n))) {
  console.log(`bench/${name}: not present in this checkout`);
}
for (const name of others) {
  console.log(`\n== ${name}`);
  const code = await runFile(join(here, name, "run.ts"));
  if (code !== 0) failures.push(`${name} exited ${code}`);
}

const fabric = await benchFabric();
try {
  for (const [name, bench] of Object.entries(MINE)) {
    console.log(`\n== ${name}`);
    await bench(fabric).catch((err: unknown) => {
      console.log(`${name} failed: ${(err as Error).stack ?? String(err)}`);
      failures.push(name);
    });
  }
} finally {
  await fabric.close();
}
console.log(
  `\nbenches ${quick ? "(quick) " : ""}done in ${((performance.now() - t0) / 1_000).toFixed(0)} s${failures.length ? `; failed: ${failures.join(", ")}` : ""}`,
);
process.exit(failures.length ? 1 : 0);
