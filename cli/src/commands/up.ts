import {
  ConfigError,
  SERVICE_NAMES,
  envNameOf,
  isValidTrustDomain,
  loadConfig,
  setting,
} from "@fabric/platform";
import { z } from "zod";
import type { Command, FlagSpec, FlagValues } from "../command.js";
import { usageError } from "../cli-error.js";
import { DEFAULT_POSTGRES_PORT, DEFAULT_TRUST_DOMAIN } from "../local-fabric.js";
import type { CommandModule } from "./module.js";

/**
 * `fabric up`'s settings: each flag, else FABRIC_UP_<NAME> in the environment (the platform's config
 * loader), else the default. Service ports default to each ServiceDefinition's own plus the offset.
 */
const portSetting = () => z.coerce.number().int().min(1).max(65535).optional();
const UP_SETTINGS = z.object({
  upTrustDomain: z.string().refine(isValidTrustDomain, "must be a lowercase DNS-like name").optional(),
  upHost: setting.host(),
  upPortOffset: z.coerce.number().int().min(0).max(50_000).default(0),
  upPostgresPort: portSetting(),
  ...Object.fromEntries(
    SERVICE_NAMES.flatMap((name) => [
      [`up${capitalized(name)}Port`, portSetting()],
      [`up${capitalized(name)}HttpPort`, portSetting()],
    ]),
  ),
});

type UpSettingKey = keyof z.infer<typeof UP_SETTINGS> & string;

/** The flag of each setting: upCaHttpPort → --ca-http-port. */
function flagOf(key: string): string {
  return key
    .replace(/^up/, "")
    .replace(/([a-z0-9])([A-Z])/g, "$1-$2")
    .toLowerCase();
}

const VALUE_NAMES: Record<string, string> = {
  upTrustDomain: "<td>",
  upHost: "<address>",
  upPortOffset: "<n>",
};

const FLAG_HELP: Record<string, string> = {
  upTrustDomain: `Trust domain of a new CA (default ${DEFAULT_TRUST_DOMAIN}); an existing CA keeps its own.`,
  upHost: "Address the services listen on (default 127.0.0.1).",
  upPortOffset: "Added to every default port (7400-7403, 7410-7413, Postgres 7420), e.g. to run two Fabrics.",
  upPostgresPort: `Port of the embedded Postgres (default ${DEFAULT_POSTGRES_PORT} + offset).`,
};

export const upCommands: CommandModule = () => {
  const flags: FlagSpec[] = Object.keys(UP_SETTINGS.shape).map((key) => {
    const service = /^up(Ca|Enrollment|Registry|Router)(Http)?Port$/.exec(key);
    const help =
      FLAG_HELP[key] ??
      `${service?.[2] ? "Plain HTTP" : "mTLS gRPC"} port of the ${service?.[1]?.toLowerCase()} service (default: its standard port + offset).`;
    return {
      name: flagOf(key),
      type: "string",
      valueName: VALUE_NAMES[key] ?? "<port>",
      help: `${help} Environment: ${envNameOf(key)}.`,
    };
  });

  const up: Command = {
    path: ["up"],
    summary: "Runs a whole Fabric on this machine: CA, Postgres and the four services.",
    help:
      "The first command on a fresh machine. Creates a CA in $FABRIC_HOME/ca if there is none (its " +
      "passphrase from FABRIC_CA_PASSPHRASE, or generated once and stored 0600 in " +
      "$FABRIC_HOME/ca-passphrase), starts Postgres — embedded, with its data in $FABRIC_HOME/dev, unless " +
      "DATABASE_URL names one — and the ca, registry, enrollment and router services as child processes, " +
      "waiting for each to be ready. Then it creates the cluster `default` (first start), writes a " +
      "platform-admin identity to $FABRIC_HOME/certs/platform-admin and the context `local`, makes that " +
      "context current, and prints the endpoints, so every other command works from another terminal. " +
      "It runs until Ctrl-C (SIGINT) or SIGTERM, then stops the services and Postgres; running it again " +
      "resumes with the same data. Service logs go to $FABRIC_HOME/dev/logs/. Other FABRIC_* variables " +
      "in the environment reach the services (e.g. FABRIC_USER_CERTIFICATE_LIFETIME_MS).",
    flags,
    identity: "none",
    async run({ session, flags: values, io, output }) {
      const settings = readUpSettings(values, io.env);
      const { runUp } = await import("../up/run-up.js");
      const ports = Object.fromEntries(
        SERVICE_NAMES.map((name) => [
          name,
          {
            grpcPort: settings[`up${capitalized(name)}Port` as UpSettingKey] as number | undefined,
            httpPort: settings[`up${capitalized(name)}HttpPort` as UpSettingKey] as number | undefined,
          },
        ]),
      );
      await runUp(
        {
          home: session.home,
          ...(settings.upTrustDomain ? { trustDomain: settings.upTrustDomain } : {}),
          host: settings.upHost,
          portOffset: settings.upPortOffset,
          ports,
          postgresPort: settings.upPostgresPort ?? DEFAULT_POSTGRES_PORT + settings.upPortOffset,
          ...(io.env.DATABASE_URL ? { databaseUrl: io.env.DATABASE_URL } : {}),
          env: io.env,
        },
        io,
        output,
      );
    },
  };
  return { commands: [up] };
};

/** Flags over FABRIC_UP_* over defaults; a bad value is reported by the flag or variable that gave it. */
function readUpSettings(values: FlagValues, env: NodeJS.ProcessEnv): z.infer<typeof UP_SETTINGS> {
  let settings: z.infer<typeof UP_SETTINGS>;
  try {
    const { FABRIC_CONFIG: _serviceConfig, ...upEnv } = env;
    settings = loadConfig(UP_SETTINGS, { env: upEnv });
  } catch (err) {
    if (err instanceof ConfigError) throw usageError(err.message);
    throw err;
  }
  const problems: string[] = [];
  const merged: Record<string, unknown> = { ...settings };
  for (const key of Object.keys(UP_SETTINGS.shape) as UpSettingKey[]) {
    const value = values[flagOf(key)];
    if (typeof value !== "string") continue;
    const parsed = UP_SETTINGS.shape[key].safeParse(value);
    if (parsed.success) merged[key] = parsed.data;
    else
      problems.push(
        `--${flagOf(key)}: ${parsed.error.issues[0]?.message ?? "invalid value"} (got "${value}")`,
      );
  }
  if (problems.length > 0) throw usageError(problems.join("; "));
  return merged as z.infer<typeof UP_SETTINGS>;
}

function capitalized(word: string): string {
  return word[0]!.toUpperCase() + word.slice(1);
}
