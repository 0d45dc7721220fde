import { availableParallelism } from "node:os";
import { z } from "zod";
import type { baseSettings } from "@fabric/platform";
import { ConfigError, setting } from "@fabric/platform";
import { DEFAULT_LIFETIMES, type LifetimePolicy } from "./lifetimes.js";

const HOUR = 3_600_000;

/** The CA's own settings; each is documented in service.ts. */
export const CA_SETTINGS = {
  caDir: setting.path(),
  // No validation beyond "a string": a failed check would echo the value in the config error.
  caPassphrase: z.string().optional(),
  caPassphraseFile: setting.path().optional(),
  crlUrl: setting.url().optional(),
  ocspUrl: setting.url().optional(),
  crlRefreshMs: setting.durationMs(HOUR),
  crlDebounceMs: setting.durationMs(200),
  ocspValidityMs: setting.durationMs(HOUR),
  nodeDefaultLifetimeMs: setting.durationMs(DEFAULT_LIFETIMES.node.defaultMs),
  nodeMaxLifetimeMs: setting.durationMs(DEFAULT_LIFETIMES.node.maxMs),
  userDefaultLifetimeMs: setting.durationMs(DEFAULT_LIFETIMES.user.defaultMs),
  userMaxLifetimeMs: setting.durationMs(DEFAULT_LIFETIMES.user.maxMs),
  adminDefaultLifetimeMs: setting.durationMs(DEFAULT_LIFETIMES.admin.defaultMs),
  adminMaxLifetimeMs: setting.durationMs(DEFAULT_LIFETIMES.admin.maxMs),
  serviceLifetimeMs: setting.durationMs(DEFAULT_LIFETIMES.service.maxMs),
  issuanceBatchMax: z.coerce.number().int().min(1).max(10_000).default(1_000),
  issuanceWorkers: z.coerce
    .number()
    .int()
    .min(0)
    .max(64)
    .default(Math.max(0, availableParallelism() - 1)),
};

export type CaConfig = z.infer<z.ZodObject<ReturnType<typeof baseSettings> & typeof CA_SETTINGS>>;

/** The lifetime policy the settings describe; a default above its cap is a configuration error. */
export function lifetimePolicy(config: CaConfig): LifetimePolicy {
  const policy: LifetimePolicy = {
    node: { defaultMs: config.nodeDefaultLifetimeMs, maxMs: config.nodeMaxLifetimeMs },
    user: { defaultMs: config.userDefaultLifetimeMs, maxMs: config.userMaxLifetimeMs },
    admin: { defaultMs: config.adminDefaultLifetimeMs, maxMs: config.adminMaxLifetimeMs },
    service: { defaultMs: config.serviceLifetimeMs, maxMs: config.serviceLifetimeMs },
  };
  const problems = Object.entries(policy)
    .filter(([, p]) => p.defaultMs > p.maxMs)
    .map(([kind]) => {
      const k = kind.toUpperCase();
      return `FABRIC_${k}_DEFAULT_LIFETIME_MS: must not exceed FABRIC_${k}_MAX_LIFETIME_MS`;
    });
  if (problems.length > 0) throw new ConfigError(problems);
  return policy;
}
