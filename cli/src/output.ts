import { Document, visit } from "yaml";
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
        return this.io.out(`${jsonText(doc, 2)}\n`);
      case "yaml":
        return this.io.out(yamlText(doc));
      case "table":
        return this.io.out(ensureNewline(terminalText(human(), { keepNewlines: true })));
    }
  }

  /**
   * One message of a stream, printed the moment it arrives: one JSON document per line, a `---`
   * separated YAML document, or one human line.
   */
  printStreamItem(doc: unknown, line: () => string): void {
    switch (this.format) {
      case "json":
        return this.io.out(`${jsonText(doc)}\n`);
      case "yaml":
        return this.io.out(`---\n${yamlText(doc)}`);
      case "table":
        return this.io.out(ensureNewline(terminalText(line(), { keepNewlines: true })));
    }
  }
}

/*
 * Server-supplied text reaches the admin's terminal: join request facts an anonymous joiner chose, node
 * names, audit details, error messages. Characters that act on a terminal or reorder text instead of
 * showing — C0 controls (ESC starts CSI and OSC sequences: clearing the screen, OSC-8 links, retitling),
 * DEL, C1 controls (U+009B is CSI on many terminals), the bidi marks, embeddings, overrides and isolates,
 * and the Unicode line and paragraph separators — are shown as escapes instead, in every output format.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

const escapeChar = (c: string) => {
  const code = c.charCodeAt(0);
  const named: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
  return (
    named[c] ??
    (code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`)
  );
};
const unicodeEscape = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;

/**
 * The one sanitizer of human output: unsafe characters as visible escapes (`\x1b`, `\u202e`, `\n`).
 * `keepNewlines` leaves line feeds alone, for text whose lines are layout (a whole rendered document).
 */
export function terminalText(text: string, options: { keepNewlines?: boolean } = {}): string {
  return text.replace(UNSAFE, (c) => (c === "\n" && options.keepNewlines ? c : escapeChar(c)));
}

/**
 * JSON, exactly: the same value, with unsafe characters (only ever inside strings; JSON.stringify already
 * escapes C0 controls) written as \u escapes. Line feeds between tokens are the pretty layout.
 */
function jsonText(doc: unknown, indent?: number): string {
  return JSON.stringify(doc, null, indent).replace(UNSAFE, (c) => (c === "\n" ? c : unicodeEscape(c)));
}

/**
 * YAML, exactly: a string holding unsafe characters (tabs and line feeds aside, which are content in
 * YAML's own block forms) is written double-quoted, where the characters become \u escapes.
 */
function yamlText(doc: unknown): string {
  const unsafe = (c: string) => c !== "\n" && c !== "\t";
  const hasUnsafe = (v: string) => [...v.matchAll(UNSAFE)].some(([c]) => unsafe(c));
  const document = new Document(doc);
  visit(document, {
    Scalar(_key, node) {
      if (typeof node.value === "string" && hasUnsafe(node.value)) node.type = "QUOTE_DOUBLE";
    },
  });
  return document.toString().replace(UNSAFE, (c) => (unsafe(c) ? unicodeEscape(c) : c));
}

function ensureNewline(text: string): string {
  return text === "" || text.endsWith("\n") ? text : `${text}\n`;
}

/** Aligned columns with a header row; cells are single-line (line breaks in a value show as `\n`). */
export function formatTable(headers: string[], raw: string[][]): string {
  const rows = raw.map((r) => r.map((c) => terminalText(c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("   ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n") + "\n";
}

/** `key   value` lines, keys aligned; multi-line values continue indented under their key. */
export function formatKeyValues(raw: [string, string][]): string {
  const pairs = raw.map(([k, v]): [string, string] => [
    terminalText(k),
    terminalText(v, { keepNewlines: true }),
  ]);
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
  return terminalText(
    pairs.map(([k, v]) => `${k}=${/[\s"=]/.test(v) || v === "" ? JSON.stringify(v) : v}`).join(" "),
  );
}
