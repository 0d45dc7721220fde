import { parseArgs } from "node:util";
import type { FlagSpec, FlagValues } from "./command.js";

/**
 * The one argument parser: node:util parseArgs in strict mode over the given flags; positionals are
 * returned for the command to check.
 */
export function parseFlags(args: string[], flags: FlagSpec[]): { values: FlagValues; positionals: string[] } {
  const takesValue = new Set(flags.filter((f) => f.type === "string").map((f) => `--${f.name}`));
  // parseArgs reads `--i32 -7` as a missing value followed by a flag; no flag starts with a digit, so a
  // negative number after a flag that takes a value is that flag's value.
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const next = args[i + 1];
    if (takesValue.has(arg) && next !== undefined && /^-\d/.test(next)) {
      joined.push(`${arg}=${next}`);
      i++;
    } else {
      joined.push(arg);
    }
  }
  const options = Object.fromEntries(
    flags.map((f) => [
      f.name,
      { type: f.type, ...(f.short ? { short: f.short } : {}), ...(f.multiple ? { multiple: true } : {}) },
    ]),
  );
  const { values, positionals } = parseArgs({ args: joined, options, strict: true, allowPositionals: true });
  return { values: values as FlagValues, positionals };
}
