import { homedir } from "node:os";
import { join } from "node:path";
import { ConfigError, loadConfig, setting } from "@fabric/platform";
import { z } from "zod";
import { usageError } from "./cli-error.js";

/**
 * The CLI's environment settings, read with the platform's config loader (FABRIC_<SETTING>):
 *   FABRIC_HOME            where config.yaml and certs/<id>/ live (default ~/.fabric)
 *   FABRIC_CLI_WARN_DAYS   warn when the identity expires in fewer days than this (default 14)
 *   FABRIC_CLI_RENEW_DAYS  renew automatically below this many days (default 3); fractions allowed,
 *                          so tests can use seconds-long windows
 */
const schema = z.object({
  home: setting.path().default(join(homedir(), ".fabric")),
  cliWarnDays: z.coerce.number().min(0).default(14),
  cliRenewDays: z.coerce.number().min(0).default(3),
});

export type CliSettings = z.infer<typeof schema>;

export function loadSettings(env: NodeJS.ProcessEnv): CliSettings {
  // FABRIC_CONFIG names a service's settings file; the CLI's own file is $FABRIC_HOME/config.yaml.
  const { FABRIC_CONFIG: _serviceConfig, ...cliEnv } = env;
  try {
    return loadConfig(schema, { env: cliEnv });
  } catch (err) {
    if (err instanceof ConfigError) throw usageError(err.message);
    throw err;
  }
}
