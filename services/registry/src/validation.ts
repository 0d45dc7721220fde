import { randomBytes } from "node:crypto";
import { invalidArgument, isValidPrincipalId } from "@fabric/platform";

/**
 * Input checks shared by the handlers. Each failure is InvalidArgument naming the field and the rule, so
 * the caller knows what to change; values are echoed shortened and never when they could be secret.
 */

const SLUG = /^[a-z][a-z0-9-]{0,62}$/;
const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$/;

/**
 * Characters that act on a terminal or reorder text instead of showing: C0 controls, DEL, C1 controls
 * (U+009B is CSI on many terminals), the bidi marks, embeddings, overrides and isolates, and the Unicode
 * line and paragraph separators. Free text the registry accepts must not carry them: an admin's terminal
 * renders it (`fabric node show`, audit details), and a reordered or cleared screen misleads the reviewer.
 */
/* eslint-disable no-control-regex -- matching control characters is the point */
const UNSAFE_TEXT = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/;
// The same without tab and line feed: layout in multi-line notes.
const UNSAFE_MULTILINE =
  /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/;
/* eslint-enable no-control-regex */
const UNSAFE_GLOBAL = new RegExp(UNSAFE_TEXT.source, "g");

/** A value echoed in an error message: shortened, quoted, and with unsafe characters as \u escapes. */
export const shown = (value: string) =>
  JSON.stringify(value.length > 64 ? `${value.slice(0, 61)}...` : value).replace(
    UNSAFE_GLOBAL,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );

/** Ids of clusters, organizations, roles and workloads: 1-63 characters of [a-z0-9-], a letter first. */
export function slug(field: string, value: string): string {
  if (!SLUG.test(value)) {
    throw invalidArgument(
      `${field} must be 1-63 characters of [a-z0-9-] starting with a letter (got ${shown(value)})`,
    );
  }
  return value;
}

export function required(field: string, value: string): string {
  if (!value) throw invalidArgument(`${field} is required`);
  return value;
}

/** Node ids as they appear in certificates. */
export function principalId(field: string, value: string): string {
  if (!isValidPrincipalId(value)) {
    throw invalidArgument(`${field} must be 1-64 characters of [A-Za-z0-9._-] (got ${shown(value)})`);
  }
  return value;
}

/**
 * Free text: at most `max` characters, never control or bidi characters (UNSAFE_TEXT); `multiline`
 * notes may hold line breaks and tabs.
 */
export function text(
  field: string,
  value: string,
  max: number,
  options: { required?: boolean; multiline?: boolean } = {},
): string {
  if (options.required && value.trim() === "") throw invalidArgument(`${field} is required`);
  if (value.length > max)
    throw invalidArgument(`${field} must be at most ${max} characters (got ${value.length})`);
  printable(field, value, options.multiline ? UNSAFE_MULTILINE : UNSAFE_TEXT);
  return value;
}

function printable(field: string, value: string, unsafe: RegExp): void {
  const found = unsafe.exec(value);
  if (found) {
    throw invalidArgument(
      `${field} must not contain control or bidi characters (found U+${found[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")} at ${found.index})`,
    );
  }
}

export function labels(field: string, map: Record<string, string>, maxEntries = 64): Record<string, string> {
  const entries = Object.entries(map);
  if (entries.length > maxEntries)
    throw invalidArgument(`${field} may hold at most ${maxEntries} entries (got ${entries.length})`);
  for (const [k, v] of entries) {
    if (!LABEL_KEY.test(k))
      throw invalidArgument(`${field} key ${shown(k)} must be 1-63 characters of [A-Za-z0-9._/-]`);
    if (v.length > 255) throw invalidArgument(`${field} value of ${shown(k)} must be at most 255 characters`);
    printable(`${field} value of ${shown(k)}`, v, UNSAFE_TEXT);
  }
  return map;
}

/** A server-assigned id: a readable prefix and 80 random bits. */
export function newId(prefix: string): string {
  return `${prefix}-${randomBytes(10).toString("hex")}`;
}
