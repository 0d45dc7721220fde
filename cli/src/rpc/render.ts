import {
  toJson,
  type DescField,
  type DescMessage,
  type JsonObject,
  type JsonValue,
  type Message,
  type Registry,
} from "@bufbuild/protobuf";
import { formatKeyValues, formatLine, formatTable, type Output } from "../output.js";
import { enumShortName } from "./enums.js";

/**
 * Responses in the three output formats. json and yaml show the proto JSON of the message with every
 * field present (defaults included, so scripts see a stable shape; 64-bit integers are strings, enums
 * their full names). The table view is for people: repeated message fields become tables whose columns
 * are the element's scalar fields, everything else `key value` lines, enums by their short names; nested
 * messages inside table rows are left to -o json/yaml.
 */
export function printMessage(output: Output, desc: DescMessage, message: Message, registry: Registry): void {
  const json = messageJson(desc, message, registry);
  output.print(json, () => humanDocument(desc, json));
}

/** One message of a stream, printed as it arrives. */
export function printStreamMessage(
  output: Output,
  desc: DescMessage,
  message: Message,
  registry: Registry,
): void {
  const json = messageJson(desc, message, registry);
  output.printStreamItem(json, () => formatLine(flatten(desc, json, "")));
}

function messageJson(desc: DescMessage, message: Message, registry: Registry): JsonObject {
  return toJson(desc, message, { registry, alwaysEmitImplicit: true }) as JsonObject;
}

function humanDocument(desc: DescMessage, json: JsonObject): string {
  const lists: DescField[] = desc.fields.filter((f) => f.fieldKind === "list" && f.listKind === "message");
  const rest = desc.fields.filter((f) => !lists.includes(f));
  const parts: string[] = [];
  for (const field of lists) {
    const rows = (json[field.jsonName] as JsonObject[] | undefined) ?? [];
    const title = lists.length > 1 ? `${field.name}:\n` : "";
    parts.push(
      title + (rows.length === 0 ? `(no ${field.name.replace(/_/g, " ")})\n` : table(field.message!, rows)),
    );
  }
  const pairs = rest.flatMap((f) => fieldPairs(f, json[f.jsonName], f.name));
  if (pairs.length > 0) parts.push(formatKeyValues(pairs));
  return parts.length > 0 ? parts.join("\n") : "(empty response)\n";
}

/** A table of list elements: one column per scalar-ish field that is non-empty in some row. */
function table(element: DescMessage, rows: JsonObject[]): string {
  const columns = element.fields.filter(isColumn);
  const cells = rows.map((row) => columns.map((f) => cellText(f, row[f.jsonName])));
  const shown = columns.map((_, i) => cells.some((r) => r[i] !== ""));
  return formatTable(
    columns.filter((_, i) => shown[i]).map((f) => f.name.toUpperCase()),
    cells.map((r) => r.filter((_, i) => shown[i])),
  );
}

function isColumn(field: DescField): boolean {
  switch (field.fieldKind) {
    case "scalar":
    case "enum":
      return true;
    case "list":
      return field.listKind !== "message";
    case "message":
      return isJsonScalarMessage(field.message);
    case "map":
      return false;
  }
}

/** Well-known types whose JSON form is a single string (Timestamp, Duration, ...). */
function isJsonScalarMessage(desc: DescMessage): boolean {
  return desc.typeName === "google.protobuf.Timestamp" || desc.typeName === "google.protobuf.Duration";
}

function cellText(field: DescField, value: JsonValue | undefined): string {
  if (value === undefined || value === null) return "";
  if (Array.isArray(value)) return value.map((v) => scalarText(field, v)).join(",");
  return scalarText(field, value);
}

function scalarText(field: DescField, value: JsonValue): string {
  if (field.enum && (typeof value === "string" || typeof value === "number")) {
    const v =
      typeof value === "number" ? field.enum.value[value] : field.enum.values.find((e) => e.name === value);
    if (v?.number === 0) return ""; // the zero value means "not set"
    return v ? enumShortName(v) : String(value);
  }
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

/**
 * `path value` pairs of one field, recursing into messages; empty strings, lists and maps and unset
 * (zero) enums are left out.
 */
function fieldPairs(field: DescField, value: JsonValue | undefined, key: string): [string, string][] {
  if (value === undefined || value === null || value === "") return [];
  if (field.fieldKind === "message" && !isJsonScalarMessage(field.message)) {
    return flatten(field.message, value as JsonObject, `${key}.`);
  }
  if (field.fieldKind === "list" && field.listKind === "message") {
    return (value as JsonObject[]).flatMap((item, i) => flatten(field.message, item, `${key}[${i}].`));
  }
  if (field.fieldKind === "map") {
    return Object.entries(value as JsonObject).map(([k, v]): [string, string] => [
      `${key}.${k}`,
      typeof v === "object" ? JSON.stringify(v) : scalarText(field, v),
    ]);
  }
  const text = cellText(field, value);
  return text === "" ? [] : [[key, text]];
}

function flatten(desc: DescMessage, json: JsonObject, prefix: string): [string, string][] {
  return desc.fields.flatMap((f) => fieldPairs(f, json[f.jsonName], `${prefix}${f.name}`));
}
