import type { FlagSpec, FlagValues } from "../command.js";
import { usageError } from "../cli-error.js";
import { parseDurationMs } from "../durations.js";

/**
 * Reading the flags of hand-written workflow commands (the generated layer maps flags onto request fields
 * itself). Errors name the flag; free-text values are never echoed, since they may hold a secret.
 */

/** A string flag's value; undefined when absent. */
export function textFlag(flags: FlagValues, name: string): string | undefined {
  const value = flags[name];
  return typeof value === "string" ? value : undefined;
}

/** A repeatable flag that also takes comma-separated values: `--roles a,b --roles c` → [a, b, c]. */
export function listFlag(flags: FlagValues, name: string): string[] {
  const value = flags[name];
  const values = Array.isArray(value) ? value : value === undefined ? [] : [value];
  return values
    .filter((v): v is string => typeof v === "string")
    .flatMap((v) => v.split(","))
    .map((v) => v.trim())
    .filter((v) => v !== "");
}

/** A duration flag (`90s`, `1h`, `7d`) in milliseconds; undefined when absent. */
export function durationFlag(flags: FlagValues, name: string): number | undefined {
  const text = textFlag(flags, name);
  if (text === undefined) return undefined;
  const ms = parseDurationMs(text);
  if (ms === undefined || ms <= 0) {
    throw usageError(`--${name} must be a positive duration such as 30s, 1h or 7d (got "${text}")`);
  }
  return ms;
}

/** An integer flag within bounds; undefined when absent. */
export function intFlag(flags: FlagValues, name: string, min: number, max: number): number | undefined {
  const text = textFlag(flags, name);
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!/^-?\d+$/.test(text) || value < min || value > max) {
    throw usageError(`--${name} must be a whole number from ${min} to ${max} (got "${text}")`);
  }
  return value;
}

/** One of a fixed set of words; undefined when absent. */
export function choiceFlag<T extends string>(
  flags: FlagValues,
  name: string,
  choices: readonly T[],
): T | undefined {
  const text = textFlag(flags, name);
  if (text === undefined) return undefined;
  // Dashes and underscores are interchangeable, as for enum flags of the generated commands.
  const norm = (w: string) => w.toLowerCase().replace(/-/g, "_");
  const found = choices.find((c) => norm(c) === norm(text));
  if (!found) throw usageError(`--${name} must be one of ${choices.join(", ")} (got "${text}")`);
  return found;
}

/** `--cluster <id>`, which every cluster-scoped workflow takes. */
export function clusterFlag(help: string): FlagSpec {
  return { name: "cluster", type: "string", valueName: "<id>", help };
}
