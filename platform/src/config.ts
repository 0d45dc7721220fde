import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { z } from "zod";

/**
 * The one config loader. A process declares its settings as a zod object with camelCase keys; each key
 * is read from the environment as FABRIC_<SCREAMING_SNAKE_KEY> (or the alias given, e.g. DATABASE_URL),
 * else from the YAML file named by FABRIC_CONFIG (same camelCase keys), else the schema's default.
 * Values are validated once at start; a bad one stops the process with a message naming the setting.
 */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

// Database URLs may carry a password.
const SECRET_KEY = /passphrase|password|secret|token|pin|key|database/i;

export function envNameOf(key: string): string {
  return `FABRIC_${key.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase()}`;
}

export interface LoadConfigOptions {
  env?: NodeJS.ProcessEnv;
  /** Extra environment names read for a key, checked before FABRIC_<KEY> (e.g. { databaseUrl: "DATABASE_URL" }). */
  aliases?: Record<string, string>;
}

export function loadConfig<S extends z.ZodObject>(schema: S, options: LoadConfigOptions = {}): z.infer<S> {
  const env = options.env ?? process.env;
  const aliases = options.aliases ?? {};
  const file = env.FABRIC_CONFIG ? readYaml(env.FABRIC_CONFIG) : {};
  const raw: Record<string, unknown> = {};
  const sources: Record<string, string> = {};
  for (const key of Object.keys(schema.shape)) {
    const names = [aliases[key], envNameOf(key)].filter((n): n is string => !!n);
    const envName = names.find((n) => env[n] !== undefined && env[n] !== "");
    if (envName) {
      raw[key] = env[envName];
      sources[key] = envName;
    } else if (key in file) {
      raw[key] = file[key];
      sources[key] = `${env.FABRIC_CONFIG}: ${key}`;
    }
  }
  const unknownKeys = Object.keys(file).filter((k) => !(k in schema.shape));
  const result = schema.safeParse(raw);
  const problems = unknownKeys.map((k) => `${env.FABRIC_CONFIG}: unknown setting "${k}"`);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const key = String(issue.path[0] ?? "");
      const name = sources[key] ?? envNameOf(key);
      // Secret settings are never echoed back, even when rejected.
      const shown = key in raw && !SECRET_KEY.test(key) ? ` (got ${JSON.stringify(raw[key])})` : "";
      problems.push(`${name}: ${issue.message}${shown}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return result.data as z.infer<S>;
}

function readYaml(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError([`FABRIC_CONFIG: cannot read ${path}: ${(err as Error).message}`]);
  }
  const doc: unknown = parseYaml(text);
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== "object" || Array.isArray(doc)) {
    throw new ConfigError([`FABRIC_CONFIG: ${path} must hold a mapping of settings`]);
  }
  return doc as Record<string, unknown>;
}

/** Reusable setting types. Environment values are strings, so numbers and booleans are coerced. */
export const setting = {
  port: (def: number) => z.coerce.number().int().min(0).max(65535).default(def),
  host: (def = "127.0.0.1") => z.string().min(1).default(def),
  durationMs: (def: number) => z.coerce.number().int().positive().default(def),
  bool: (def: boolean) =>
    z
      .union([z.boolean(), z.enum(["true", "false", "1", "0"])])
      .transform((v) => v === true || v === "true" || v === "1")
      .default(def),
  url: () => z.string().url(),
  path: () => z.string().min(1),
  logLevel: () => z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
};

/**
 * Runs a process's start function, turning a ConfigError into a clean exit with the message instead of
 * a stack trace.
 */
export function exitOnConfigError(err: unknown): never {
  if (err instanceof ConfigError) {
    console.error(err.message);
    process.exit(78); // EX_CONFIG
  }
  throw err;
}
