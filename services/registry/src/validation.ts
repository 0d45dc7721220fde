import { randomBytes } from "node:crypto";
import { invalidArgument, isValidPrincipalId } from "@fabric/platform";

/**
 * Input checks shared by the handlers. Each failure is InvalidArgument naming the field and the rule, so
 * the caller knows what to change; values are echoed shortened and never when they could be secret.
 */

const SLUG = /^[a-z][a-z0-9-]{0,62}$/;
const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$/;

export const shown = (value: string) =>
  JSON.stringify(value.length > 64 ? `${value.slice(0, 61)}...` : value);

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

export function text(
  field: string,
  value: string,
  max: number,
  options: { required?: boolean } = {},
): string {
  if (options.required && value.trim() === "") throw invalidArgument(`${field} is required`);
  if (value.length > max)
    throw invalidArgument(`${field} must be at most ${max} characters (got ${value.length})`);
  return value;
}

export function labels(field: string, map: Record<string, string>, maxEntries = 64): Record<string, string> {
  const entries = Object.entries(map);
  if (entries.length > maxEntries)
    throw invalidArgument(`${field} may hold at most ${maxEntries} entries (got ${entries.length})`);
  for (const [k, v] of entries) {
    if (!LABEL_KEY.test(k))
      throw invalidArgument(`${field} key ${shown(k)} must be 1-63 characters of [A-Za-z0-9._/-]`);
    if (v.length > 255) throw invalidArgument(`${field} value of ${shown(k)} must be at most 255 characters`);
  }
  return map;
}

/** A server-assigned id: a readable prefix and 80 random bits. */
export function newId(prefix: string): string {
  return `${prefix}-${randomBytes(10).toString("hex")}`;
}
