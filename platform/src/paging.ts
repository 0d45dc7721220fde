import { createHash } from "node:crypto";
import { invalidArgument } from "./errors.js";

/**
 * Paging for every List RPC (DESIGN.md: every list RPC pages): `page_size` 0 means the default, larger
 * than the maximum is capped; `page_token` is opaque to callers. A token carries the sort key of the
 * last item returned (keyset paging, so pages stay correct while rows are added) and a digest of the
 * filters it was issued for, so a token replayed with other filters is refused instead of silently
 * skipping or repeating items.
 */
export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

export function pageSize(requested: number): number {
  if (!Number.isInteger(requested) || requested < 0) {
    throw invalidArgument(`page_size must be 0 (default ${DEFAULT_PAGE_SIZE}) or a positive number`);
  }
  return requested === 0 ? DEFAULT_PAGE_SIZE : Math.min(requested, MAX_PAGE_SIZE);
}

/** The sort key of the last item of a page: strings and numbers only (bigints as strings). */
export type PagePosition = (string | number)[];

const digest = (scope: string) => createHash("sha256").update(scope).digest("base64url").slice(0, 12);

/** `scope` names the RPC and its filters, e.g. `ListNodes|cluster=c1|state=1`. */
export function encodePageToken(position: PagePosition, scope: string): string {
  return Buffer.from(JSON.stringify({ s: digest(scope), p: position })).toString("base64url");
}

/** The position a token was issued at; undefined for an empty token (first page). */
export function decodePageToken(token: string, scope: string): PagePosition | undefined {
  if (token === "") return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    parsed = undefined;
  }
  const body = parsed as { s?: unknown; p?: unknown } | undefined;
  const valid =
    typeof body === "object" &&
    body !== null &&
    typeof body.s === "string" &&
    Array.isArray(body.p) &&
    body.p.every((v) => typeof v === "string" || typeof v === "number");
  if (!valid) {
    throw invalidArgument(
      "page_token is not a token this server issued; start again with an empty page_token",
    );
  }
  if (body.s !== digest(scope)) {
    throw invalidArgument(
      "page_token was issued for different filters; repeat the request with the filters of the first page, or start again with an empty page_token",
    );
  }
  return body.p as PagePosition;
}

/**
 * One page of a list sorted by `keyOf` in `comparePositions` order (see sortByPosition): the items after
 * the token's position, at most the page size, and the token for the next page ("" on the last page).
 */
export function pageOf<T>(
  sorted: readonly T[],
  keyOf: (item: T) => PagePosition,
  request: { pageSize: number; pageToken: string },
  scope: string,
): { items: T[]; nextPageToken: string } {
  const size = pageSize(request.pageSize);
  const after = decodePageToken(request.pageToken, scope);
  let start = 0;
  if (after) {
    // Binary search for the first item whose key sorts after the position.
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (comparePositions(keyOf(sorted[mid]!), after) <= 0) lo = mid + 1;
      else hi = mid;
    }
    start = lo;
  }
  const items = sorted.slice(start, start + size);
  const more = start + size < sorted.length;
  return {
    items,
    nextPageToken: more && items.length > 0 ? encodePageToken(keyOf(items.at(-1)!), scope) : "",
  };
}

/** Sorts items in the order pageOf expects. */
export function sortByPosition<T>(items: T[], keyOf: (item: T) => PagePosition): T[] {
  return items.sort((a, b) => comparePositions(keyOf(a), keyOf(b)));
}

/** Orders two positions element by element (numbers numerically, strings by code unit). */
export function comparePositions(a: PagePosition, b: PagePosition): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x === y) continue;
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    if (typeof x === "number" && typeof y === "number") return x < y ? -1 : 1;
    return String(x) < String(y) ? -1 : 1;
  }
  return 0;
}
