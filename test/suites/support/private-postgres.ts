// A Postgres server of the test's own, from the Debian server binaries, on a temporary data directory and
// a free port: the machine's shared Postgres must never be restarted, this one can be killed at will.
import { execFile } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "@fabric/platform/testing";

const run = promisify(execFile);

export interface PrivatePostgres {
  /** Admin URL (user postgres, trust auth, database postgres). */
  url: string;
  /** Stops the server without a clean shutdown (SIGQUIT, as in a crash: recovery runs at the next start). */
  crash(): Promise<void>;
  start(): Promise<void>;
  /** Stops the server and removes its data directory. */
  close(): Promise<void>;
}

/** FABRIC_PG_BINDIR, else the newest /usr/lib/postgresql/<version>/bin that has initdb. */
function serverBinaries(): string {
  if (process.env.FABRIC_PG_BINDIR) return process.env.FABRIC_PG_BINDIR;
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(join(root, v, "bin", "initdb")))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (!versions[0]) {
    throw new Error(
      "no Postgres server binaries found under /usr/lib/postgresql: apt-get install -y postgresql, or set FABRIC_PG_BINDIR",
    );
  }
  return join(root, versions[0], "bin");
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = serverBinaries();
  const dir = mkdtempSync(join(tmpdir(), "fabric-pg-"));
  const data = join(dir, "data");
  // initdb refuses to run as root: as root, the server runs as the postgres user and owns the directory.
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { stdout } = await run("id", ["-u", "postgres"]);
    const { stdout: gid } = await run("id", ["-g", "postgres"]);
    chownSync(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const pg = (tool: string, args: string[]) =>
    asRoot ? run("runuser", ["-u", "postgres", "--", join(bin, tool), ...args]) : run(join(bin, tool), args);

  await pg("initdb", ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]);
  const port = await freePort();
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off`;
  const start = async () => {
    await pg("pg_ctl", ["-D", data, "-o", options, "-l", join(dir, "server.log"), "-w", "-t", "60", "start"]);
  };
  const stop = async (mode: "immediate" | "fast") => {
    await pg("pg_ctl", ["-D", data, "-m", mode, "-w", "-t", "60", "stop"]);
  };
  await start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    crash: () => stop("immediate"),
    start,
    async close() {
      await stop("fast").catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
