// Runs parser-fuzz.ts as a child process and reads its verdict, including the input that killed it when
// it died without one (a native abort).
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnTs } from "@fabric/platform/testing";
import type { ParserTarget } from "./parser-fuzz.js";

export interface ParserFuzzOutcome {
  /** The child's exit code; null when a signal ended it. */
  code: number | null;
  inputs?: number;
  seconds?: number;
  seedsPerSecond?: number;
  unexpected?: string;
  hang?: number;
  /** The offending input, base64 (for a crash: the last one the child was given). */
  input?: string;
}

export async function runParserFuzz(
  target: ParserTarget,
  seconds: number,
  seed: number,
): Promise<ParserFuzzOutcome> {
  const dir = mkdtempSync(join(tmpdir(), "fabric-fuzz-"));
  const record = join(dir, "current-input");
  try {
    const child = await spawnTs(join(import.meta.dirname, "parser-fuzz.ts"), {
      args: [target, String(seconds), String(seed), record],
    });
    const code = await child.exited;
    const verdict = child
      .output()
      .trim()
      .split("\n")
      .reverse()
      .find((l) => l.startsWith("{"));
    if (verdict) return { code, ...(JSON.parse(verdict) as Omit<ParserFuzzOutcome, "code">) };
    let input = "";
    try {
      input = readFileSync(record).toString("base64");
    } catch {
      // died before the first input
    }
    return { code, unexpected: `the process died: ${child.output().trim().slice(0, 500)}`, input };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
