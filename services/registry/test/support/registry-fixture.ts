// The registry in-process for tests: a fresh database, a throwaway PKI, the registry's own identity on
// disk, a stand-in CA for revocations, and the real service definition started with startService (the
// same runtime, handlers and authorization table as the process).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Client } from "@connectrpc/connect";
import {
  buildSpiffeId,
  createPool,
  createRpcClient,
  saveIdentity,
  startService,
  type Pool,
  type TlsCredentials,
} from "@fabric/platform";
import {
  createTestDatabase,
  createTestPki,
  waitForReady,
  type TestDatabase,
  type TestPki,
} from "@fabric/platform/testing";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { registryService } from "../../src/service.js";
import { startStandInCa, type StandInCa } from "./stand-in-ca.js";

type Running = Awaited<ReturnType<typeof startService<typeof registryService.settings>>>;

export interface RegistryFixture {
  pki: TestPki;
  db: TestDatabase;
  ca: StandInCa;
  running: Running;
  /** The registry schema, for assertions and for tampering in tests. */
  pool: Pool;
  env: Record<string, string>;
  admin: TlsCredentials;
  client(creds: TlsCredentials): Client<typeof RegistryService>;
  /** Stops the registry and starts it again on the same database (new ports). */
  restart(): Promise<void>;
  close(): Promise<void>;
}

export async function startRegistry(env: Record<string, string> = {}): Promise<RegistryFixture> {
  const pki = await createTestPki("fabric.test");
  const db = await createTestDatabase("registry");
  const ca = await startStandInCa(pki);
  const dir = mkdtempSync(join(tmpdir(), "registry-id-"));
  saveIdentity(dir, await pki.issue({ kind: "service", id: "registry" }));
  const fullEnv = {
    DATABASE_URL: db.url,
    FABRIC_IDENTITY_DIR: dir,
    FABRIC_CA_URL: ca.url,
    FABRIC_TRUST_DOMAIN: pki.trustDomain,
    FABRIC_GRPC_PORT: "0",
    FABRIC_HTTP_PORT: "0",
    FABRIC_LOG_LEVEL: "silent",
    ...env,
  };
  const boot = async () => {
    const running = await startService(registryService, fullEnv);
    await waitForReady(`${running.server.httpUrl}/readyz`, 15_000);
    return running;
  };
  const fixture: RegistryFixture = {
    pki,
    db,
    ca,
    running: await boot(),
    pool: createPool({ url: db.url, schema: "registry", max: 4 }),
    env: fullEnv,
    admin: await pki.issue({ kind: "admin", id: "alice", grant: "platform-admin" }),
    client(creds) {
      return createRpcClient(RegistryService, {
        url: fixture.running.server.grpcUrl,
        credentials: creds,
        expectServerId: buildSpiffeId({ trustDomain: pki.trustDomain, kind: "service", id: "registry" }),
        retries: 0,
        timeoutMs: 20_000,
      });
    },
    async restart() {
      await fixture.running.close();
      fixture.running = await boot();
    },
    async close() {
      await fixture.running.close();
      await fixture.pool.end();
      await ca.close();
      await db.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  ca.issued(fixture.admin);
  return fixture;
}
