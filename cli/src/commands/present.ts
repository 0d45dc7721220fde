import {
  toJson,
  type DescEnum,
  type DescMessage,
  type JsonValue,
  type MessageShape,
} from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { enumShortName } from "../rpc/enums.js";

/**
 * How workflow commands show contract messages. `-o json|yaml` get the proto JSON with every field
 * present, exactly as the generated commands print it, so scripts can switch between the two layers;
 * tables get the short forms below.
 */
export function protoJson<D extends DescMessage>(schema: D, message: MessageShape<D>): JsonValue {
  return toJson(schema, message, { alwaysEmitImplicit: true });
}

/** An enum value by its short lower-case name (`JOIN_REQUEST_STATE_PENDING` → `pending`); "" for 0. */
export function enumText(desc: DescEnum, value: number): string {
  const v = desc.value[value];
  return !v || v.number === 0 ? "" : enumShortName(v);
}

/** A timestamp for a table: UTC to the second, and how far from now (`2030-01-01 10:00:00Z (in 2h)`). */
export function whenText(ts: Timestamp | undefined, now = Date.now()): string {
  if (!ts) return "";
  const date = timestampDate(ts);
  return `${date
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, "Z")} (${relative(date.getTime() - now)})`;
}

/** `in 5m`, `3h ago`, `in 2d`. */
export function relative(deltaMs: number): string {
  const abs = Math.abs(deltaMs);
  const text =
    abs < 60_000
      ? `${Math.round(abs / 1000)}s`
      : abs < 3_600_000
        ? `${Math.round(abs / 60_000)}m`
        : abs < 172_800_000
          ? `${Math.round(abs / 3_600_000)}h`
          : `${Math.round(abs / 86_400_000)}d`;
  return deltaMs >= 0 ? `in ${text}` : `${text} ago`;
}

export const listText = (values: readonly string[]) => (values.length === 0 ? "-" : values.join(","));

/** Every page of a list RPC, in order (each list RPC pages with page_token / next_page_token). */
export async function collectPages<T>(
  fetchPage: (pageToken: string) => Promise<{ items: T[]; nextPageToken: string }>,
): Promise<T[]> {
  const all: T[] = [];
  let token = "";
  do {
    const page = await fetchPage(token);
    all.push(...page.items);
    token = page.nextPageToken;
  } while (token !== "");
  return all;
}
