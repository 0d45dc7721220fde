import {
  fromJson,
  ScalarType,
  type DescEnum,
  type DescField,
  type DescMessage,
  type JsonObject,
  type JsonValue,
  type Message,
  type Registry,
} from "@bufbuild/protobuf";
import type { FlagSpec, FlagValues } from "../command.js";
import { usageError } from "../cli-error.js";
import { durationJson, parseDurationMs } from "../durations.js";
import { commentOf } from "./comments.js";
import { kebabCase } from "./contracts.js";
import { enumChoices, findEnumValue } from "./enums.js";

/** A flag that sets one field of a request message. */
export interface FieldFlag extends FlagSpec {
  field: DescField;
}

/** `--json`: the whole request; flags given with it override its fields. */
export const JSON_FLAG: FlagSpec = {
  name: "json",
  type: "string",
  valueName: "<json>",
  help:
    "The whole request as proto JSON (field names as in the proto or in lowerCamelCase), for nested " +
    "messages and maps. Flags given with it override the fields they set.",
};

/** What one value of a field is, whatever its cardinality (singular, list element, map value). */
type Element =
  | { kind: "scalar"; scalar: ScalarType }
  | { kind: "enum"; desc: DescEnum }
  | { kind: "message"; desc: DescMessage };

const DURATION = "google.protobuf.Duration";
const TIMESTAMP = "google.protobuf.Timestamp";
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

/**
 * One flag per field of a request message, named after the field in kebab case. A field whose name
 * would shadow a flag in `taken` (the global flags and --json) is prefixed with `request-`.
 */
export function fieldFlags(message: DescMessage, taken: ReadonlySet<string>): FieldFlag[] {
  const flagName = (field: DescField) => {
    const base = kebabCase(field.name);
    return taken.has(base) ? `request-${base}` : base;
  };
  return message.fields.map((field) => {
    const name = flagName(field);
    const element = elementOf(field);
    const comment = commentOf(field).replace(/\s+/g, " ").trim();
    const notes: string[] = [];
    let valueName = valueNameOf(element);
    let choices: string[] | undefined;
    if (element.kind === "enum") {
      choices = enumChoices(element.desc);
      notes.push(`One of: ${choices.join(", ")}.`);
    }
    if (element.kind === "message" && element.desc.typeName === DURATION) {
      notes.push("A duration such as 30s, 15m, 24h or 7d.");
    } else if (element.kind === "message" && element.desc.typeName === TIMESTAMP) {
      notes.push("An RFC 3339 time such as 2030-01-02T15:04:05Z.");
    } else if (element.kind === "message") {
      notes.push(`Proto JSON of ${element.desc.typeName}.`);
    }
    if (field.fieldKind === "list") {
      notes.push(
        element.kind === "message"
          ? "Repeatable; a JSON array also works."
          : "Repeatable; values may also be comma-separated.",
      );
    }
    if (field.fieldKind === "map") {
      valueName = "<key=value>";
      notes.push("Repeatable: key=value, or a JSON object.");
    }
    if (field.oneof) {
      const members = field.oneof.fields.map((f) => `--${flagName(f)}`).join(", ");
      notes.push(`At most one of ${members}.`);
    }
    const singularBool = field.fieldKind === "scalar" && field.scalar === ScalarType.BOOL;
    return {
      name,
      field,
      type: singularBool ? "boolean" : "string",
      ...(field.fieldKind === "list" || field.fieldKind === "map" ? { multiple: true } : {}),
      ...(singularBool ? {} : { valueName }),
      ...(choices ? { choices } : {}),
      help: [comment, ...notes].filter((s) => s.length > 0).join(" "),
    } satisfies FieldFlag;
  });
}

/**
 * Builds the request from --json (if given) and the field flags: each flag converts its value(s) to
 * proto JSON and replaces that field (and any other member of its oneof) in the --json object; the
 * result is decoded with the message's own JSON rules, so every check protobuf makes applies.
 */
export function buildRequest(
  message: DescMessage,
  flags: FieldFlag[],
  values: FlagValues,
  registry: Registry,
): Message {
  const json = parseJsonFlag(values[JSON_FLAG.name]);
  const given = flags.filter((f) => isGiven(values[f.name]));
  for (const flag of given) {
    const { field } = flag;
    if (field.oneof) {
      const rival = given.find((g) => g !== flag && g.field.oneof === field.oneof);
      if (rival) {
        throw usageError(
          `--${flag.name} and --${rival.name} both set "${field.oneof.name}", which takes only one of them`,
        );
      }
      for (const member of field.oneof.fields) deleteField(json, member);
    }
    deleteField(json, field);
    json[field.jsonName] = fieldJson(flag, values[flag.name]!);
  }
  try {
    return fromJson(message, json, { registry });
  } catch (err) {
    throw usageError(
      `the request is not a valid ${message.typeName}: ${withoutValues((err as Error).message)}`,
      "flags and --json must follow the proto's types; see --help",
    );
  }
}

function isGiven(value: FlagValues[string]): boolean {
  return value !== undefined && !(Array.isArray(value) && value.length === 0);
}

function deleteField(json: JsonObject, field: DescField): void {
  delete json[field.name];
  delete json[field.jsonName];
}

function parseJsonFlag(value: FlagValues[string]): JsonObject {
  if (value === undefined) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(String(value));
  } catch (err) {
    throw usageError(`--json is not valid JSON${jsonErrorPosition(err)}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw usageError("--json must be a JSON object holding the request's fields");
  }
  return parsed as JsonObject;
}

function fieldJson(flag: FieldFlag, value: string | boolean | (string | boolean)[]): JsonValue {
  const { field } = flag;
  const element = elementOf(field);
  const texts = (Array.isArray(value) ? value : [value]).map(String);
  switch (field.fieldKind) {
    case "list":
      return element.kind === "message"
        ? texts.flatMap((t) => {
            const parsed = parseFlagJson(flag, t);
            return Array.isArray(parsed) ? parsed : [parsed];
          })
        : texts
            .flatMap((t) => t.split(","))
            .filter((t) => t.trim() !== "")
            .map((t) => elementJson(flag, element, t.trim()));
    case "map": {
      const entries: JsonObject = {};
      for (const text of texts) {
        if (text.trimStart().startsWith("{")) {
          const parsed = parseFlagJson(flag, text);
          if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
            throw usageError(`--${flag.name}: a JSON value must be an object of entries`);
          }
          Object.assign(entries, parsed);
          continue;
        }
        const eq = text.indexOf("=");
        if (eq <= 0) throw usageError(`--${flag.name} takes key=value (got an entry without "=" or key)`);
        entries[text.slice(0, eq)] = elementJson(flag, element, text.slice(eq + 1));
      }
      return entries;
    }
    default:
      return typeof value === "boolean" ? value : elementJson(flag, element, texts[0]!);
  }
}

/** One value as proto JSON, checked first so the error names the flag and what it takes. */
function elementJson(flag: FieldFlag, element: Element, text: string): JsonValue {
  const name = `--${flag.name}`;
  switch (element.kind) {
    case "enum": {
      const value = findEnumValue(element.desc, text);
      if (!value) {
        throw usageError(`${name}: "${text}" is not one of ${enumChoices(element.desc).join(", ")}`);
      }
      return value.name;
    }
    case "message":
      if (element.desc.typeName === DURATION) {
        const ms = parseDurationMs(text);
        if (ms === undefined)
          throw usageError(`${name}: "${text}" is not a duration; use e.g. 30s, 15m, 24h or 7d`);
        return durationJson(ms);
      }
      if (element.desc.typeName === TIMESTAMP) {
        if (!RFC3339.test(text) || Number.isNaN(Date.parse(text))) {
          throw usageError(`${name}: "${text}" is not an RFC 3339 time such as 2030-01-02T15:04:05Z`);
        }
        return text;
      }
      return parseFlagJson(flag, text);
    case "scalar":
      return scalarJson(name, element.scalar, text);
  }
}

const INT32 = [-(2 ** 31), 2 ** 31 - 1] as const;
const UINT32 = [0, 2 ** 32 - 1] as const;
const INT64 = [-(2n ** 63n), 2n ** 63n - 1n] as const;
const UINT64 = [0n, 2n ** 64n - 1n] as const;

function scalarJson(name: string, scalar: ScalarType, text: string): JsonValue {
  const integer = (range: readonly [number, number], kind: string) => {
    const n = Number(text);
    if (!/^-?\d+$/.test(text) || n < range[0] || n > range[1]) {
      throw usageError(
        `${name} takes a whole number from ${range[0]} to ${range[1]} (${kind}), got "${text}"`,
      );
    }
    return n;
  };
  const long = (range: readonly [bigint, bigint], kind: string) => {
    if (!/^-?\d+$/.test(text) || BigInt(text) < range[0] || BigInt(text) > range[1]) {
      throw usageError(
        `${name} takes a whole number from ${range[0]} to ${range[1]} (${kind}), got "${text}"`,
      );
    }
    return text; // proto JSON carries 64-bit integers as strings
  };
  switch (scalar) {
    case ScalarType.STRING:
      return text;
    case ScalarType.BOOL:
      if (!/^(true|false)$/i.test(text)) throw usageError(`${name} takes true or false, got "${text}"`);
      return text.toLowerCase() === "true";
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return integer(INT32, "int32");
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return integer(UINT32, "uint32");
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return long(INT64, "int64");
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return long(UINT64, "uint64");
    case ScalarType.FLOAT:
    case ScalarType.DOUBLE: {
      const n = Number(text);
      if (text.trim() === "" || !Number.isFinite(n))
        throw usageError(`${name} takes a number, got "${text}"`);
      return n;
    }
    case ScalarType.BYTES:
      // Not echoed: bytes fields carry signatures and other opaque material.
      if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(text)) throw usageError(`${name} takes base64-encoded bytes`);
      return text;
  }
}

/** A message-typed flag's value; never echoed (message fields may hold secrets). */
function parseFlagJson(flag: FieldFlag, text: string): JsonValue {
  try {
    return JSON.parse(text) as JsonValue;
  } catch (err) {
    throw usageError(
      `--${flag.name} takes proto JSON and its value is not valid JSON${jsonErrorPosition(err)}`,
    );
  }
}

function jsonErrorPosition(err: unknown): string {
  const position = /position (\d+)/.exec((err as Error).message)?.[1];
  return position === undefined ? "" : ` (error at character ${position})`;
}

/**
 * protobuf-es ends some decode errors with the offending value. A value typed into the wrong field may
 * be a secret (a PIN or token), so it is cut off.
 */
export function withoutValues(message: string): string {
  return message.replace(/(: |got )("(?:[^"\\]|\\.)*"|-?\d[\d.eE+-]*n?|true|false)$/, "$1(value not shown)");
}

function elementOf(field: DescField): Element {
  const kind =
    field.fieldKind === "list" ? field.listKind : field.fieldKind === "map" ? field.mapKind : field.fieldKind;
  switch (kind) {
    case "enum":
      return { kind, desc: field.enum! };
    case "message":
      return { kind, desc: field.message! };
    default:
      return { kind: "scalar", scalar: field.scalar! };
  }
}

function valueNameOf(element: Element): string {
  switch (element.kind) {
    case "enum":
      return "<value>";
    case "message":
      return element.desc.typeName === DURATION
        ? "<duration>"
        : element.desc.typeName === TIMESTAMP
          ? "<time>"
          : "<json>";
    case "scalar":
      return `<${ScalarType[element.scalar].toLowerCase()}>`;
  }
}
