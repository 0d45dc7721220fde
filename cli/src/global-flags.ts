import type { FlagSpec, FlagValues } from "./command.js";
import { usageError } from "./cli-error.js";
import { parseDurationMs } from "./durations.js";
import { OUTPUT_FORMATS, resolveOutputFormat, type OutputFormat } from "./output.js";

/** Flags every command accepts, before or after the command words. */
export const GLOBAL_FLAGS: FlagSpec[] = [
  {
    name: "context",
    type: "string",
    valueName: "<name>",
    help: "Use this context from $FABRIC_HOME/config.yaml instead of its current-context.",
  },
  {
    name: "server",
    type: "string",
    valueName: "<url>",
    help: "https://host:port of the service the command calls, instead of the context's URL for it.",
  },
  {
    name: "identity",
    type: "string",
    valueName: "<dir>",
    help: "Identity directory (key.pem, cert.pem, chain.pem, ca.pem) instead of the context's.",
  },
  {
    name: "output",
    short: "o",
    type: "string",
    valueName: "<format>",
    choices: OUTPUT_FORMATS,
    help: "table, json or yaml. Default: table when stdout is a terminal, json otherwise.",
  },
  {
    name: "timeout",
    type: "string",
    valueName: "<duration>",
    help: "Deadline of each call (e.g. 10s, 2m). Default: 30s for unary calls, none for streams.",
  },
  { name: "help", short: "h", type: "boolean", help: "Show help for the command." },
];

export const GLOBAL_FLAG_NAMES = new Set(GLOBAL_FLAGS.map((f) => f.name));

export interface GlobalOptions {
  context?: string;
  server?: string;
  identity?: string;
  output: OutputFormat;
  /** Unset: the command's default (30 s for unary calls, no deadline for streams). */
  timeoutMs?: number;
}

export function readGlobalOptions(values: FlagValues, stdoutIsTty: boolean): GlobalOptions {
  const text = (name: string) => (typeof values[name] === "string" ? (values[name] as string) : undefined);
  const options: GlobalOptions = { output: resolveOutputFormat(text("output"), stdoutIsTty) };
  for (const name of ["context", "server", "identity"] as const) {
    const value = text(name);
    if (value !== undefined) options[name] = value;
  }
  const timeout = text("timeout");
  if (timeout !== undefined) {
    const ms = parseDurationMs(timeout);
    if (ms === undefined || ms <= 0) {
      throw usageError(`--timeout must be a positive duration such as 10s or 2m (got "${timeout}")`);
    }
    options.timeoutMs = ms;
  }
  if (options.server !== undefined && !/^https:\/\/[^/]+/.test(options.server)) {
    throw usageError(
      `--server must be an https:// URL (got "${options.server}")`,
      "the services' gRPC ports speak mTLS, e.g. --server https://127.0.0.1:7402",
    );
  }
  return options;
}
