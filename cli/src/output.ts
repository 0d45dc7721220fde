import { stringify as toYaml } from "yaml";
import { usageError } from "./cli-error.js";
import type { Io } from "./io.js";

export const OUTPUT_FORMATS = ["table", "json", "yaml"] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** `-o` wins; otherwise tables for a person at a terminal and JSON for scripts and pipes. */
export function resolveOutputFormat(flag: string | undefined, stdoutIsTty: boolean): OutputFormat {
  if (flag === undefined) return stdoutIsTty ? "table" : "json";
  if ((OUTPUT_FORMATS as readonly string[]).includes(flag)) return flag as OutputFormat;
  throw usageError(`-o/--output must be one of ${OUTPUT_FORMATS.join(", ")} (got "${flag}")`);
}

/**
 * Prints results in the chosen format. Callers hand over the machine form (a JSON-compatible value,
 * used for json and yaml) and a function rendering the human form (used for table), so each format
 * shows the same data.
 */
export class Output {
  constructor(
    private readonly io: Io,
    readonly format: OutputFormat,
  ) {}

  /** One result: pretty JSON, a YAML document, or the human rendering. */
  print(doc: unknown, human: () => string): void {
    switch (this.format) {
      case "json":
        return this.io.out(`${JSON.stringify(doc, null, 2)}\n`);
      case "yaml":
        return this.io.out(toYaml(doc));
      case "table":
        return this.io.out(ensureNewline(human()));
    }
  }

  /**
   * One message of a stream, printed the moment it arrives: one JSON document per line, a `---`
   * separated YAML document, or one human line.
   */
  printStreamItem(doc: unknown, line: () => string): void {
    switch (this.format) {
      case "json":
        return this.io.out(`${JSON.stringify(doc)}\n`);
      case "yaml":
        return this.io.out(`---\n${toYaml(doc)}`);
      case "table":
        return this.io.out(ensureNewline(line()));
    }
  }
}

function ensureNewline(text: string): string {
  return text === "" || text.endsWith("\n") ? text : `${text}\n`;
}

/** Aligned columns with a header row; cells are single-line. */
export function formatTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("   ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n") + "\n";
}

/** `key   value` lines, keys aligned; multi-line values continue indented under their key. */
export function formatKeyValues(pairs: [string, string][]): string {
  const width = Math.max(0, ...pairs.map(([k]) => k.length));
  return pairs
    .map(([key, value]) =>
      value.includes("\n")
        ? `${key}:\n${value
            .trimEnd()
            .split("\n")
            .map((l) => `  ${l}`)
            .join("\n")}`
        : `${key.padEnd(width)}   ${value}`.trimEnd(),
    )
    .join("\n")
    .concat(pairs.length > 0 ? "\n" : "");
}

/** `key=value` pairs on one line; values with spaces or quotes are JSON-quoted. */
export function formatLine(pairs: [string, string][]): string {
  return pairs.map(([k, v]) => `${k}=${/[\s"=]/.test(v) || v === "" ? JSON.stringify(v) : v}`).join(" ");
}
