import type { DescEnum, DescEnumValue } from "@bufbuild/protobuf";

/**
 * How enum values look on the command line and in tables: the value name without the enum's shared
 * prefix, lower case (`PRINCIPAL_KIND_NODE` → `node`, `ADMIN_ROLE_PLATFORM_ADMIN` → `platform_admin`).
 */
export function enumShortName(value: DescEnumValue): string {
  const lower = value.name.toLowerCase();
  const prefix = value.parent.sharedPrefix;
  return prefix && lower.startsWith(prefix) ? lower.slice(prefix.length) : lower;
}

/** The values a user would choose between: every value except the zero "unspecified" one. */
export function enumChoices(desc: DescEnum): string[] {
  return desc.values.filter((v) => v.number !== 0).map(enumShortName);
}

/**
 * The enum value a command-line word names: its short name (dashes allowed for underscores) or the full
 * value name, case-insensitively.
 */
export function findEnumValue(desc: DescEnum, word: string): DescEnumValue | undefined {
  const wanted = word.trim().toLowerCase().replace(/-/g, "_");
  return desc.values.find((v) => enumShortName(v) === wanted || v.name.toLowerCase() === wanted);
}
