/**
 * Cross-service test harness: a fresh CA, a fresh database and the requested services as real child
 * processes on free ports, with real mTLS.
 *
 *   const fabric = await startFabric({ services: ["ca", "registry"], env: { registry: { FABRIC_X: "1" } } });
 *   const ca = fabric.client(CaService, "ca");                       // as fabric.admin (platform-admin)
 *   const node = await fabric.issue({ kind: "node", id: "n1", cluster: "c1" });
 *   const asNode = fabric.client(RegistryService, "registry", node);
 *   await fabric.kill("ca"); await fabric.start("ca");              // SIGKILL, then the same ports again
 *   await fabric.close();                                            // stops everything, drops the DB
 *
 * Services start in the order ca → registry → enrollment → router, each waiting for its /readyz. Each
 * gets FABRIC_IDENTITY_DIR=<dir>/services/<name> (written by initCa), DATABASE_URL of the shared fresh
 * database as its own login role (fabric_<name>: the harness bootstraps each service's role, schema and
 * grants with the admin URL first, as `fabric up` does, so no service sees that URL), FABRIC_TRUST_DOMAIN,
 * FABRIC_GRPC_PORT / FABRIC_HTTP_PORT,
 * and FABRIC_<PEER>_URL for every requested service; the CA also gets FABRIC_CA_DIR and
 * FABRIC_CA_PASSPHRASE. `env` adds or overrides variables per service (e.g. short lifetimes).
 * `issue` signs fixtures offline with the CA's intermediate (recorded in the CA's inventory, so they can
 * be listed and revoked by serial like any other certificate).
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { DescService } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  OfflineIssuer,
  initCa,
  serviceIdentityDir,
  type OfflineClaims,
  type OfflineIssueOptions,
} from "@fabric/ca";
import {
  bootstrapServiceDatabase,
  buildSpiffeId,
  createRpcClient,
  loadIdentity,
  type ServiceName,
  type TlsCredentials,
} from "@fabric/platform";
import {
  createTestDatabase,
  freePort,
  spawnTs,
  type ChildService,
  type TestDatabase,
} from "@fabric/platform/testing";

/** Start order: each service may depend on those before it. */
export const SERVICE_ORDER: readonly ServiceName[] = ["ca", "registry", "enrollment", "router"];

const REPO = fileURLToPath(new URL("../..", import.meta.url));

/**
 * Enrollment settings that lift its per-address and per-credential rate limits: for tests and benches
 * whose many calls all come from 127.0.0.1 and are not about rate limiting.
 */
export const NO_ENROLLMENT_RATE_LIMITS: Readonly<Record<string, string>> = {
  FABRIC_ADDRESS_RATE_PER_SECOND: "1000000",
  FABRIC_ADDRESS_BURST: "1000000",
  FABRIC_CREDENTIAL_RATE_PER_SECOND: "1000000",
  FABRIC_CREDENTIAL_BURST: "1000000",
};

export interface StartFabricOptions {
  services: ServiceName[];
  /** Extra or overriding environment per service. */
  env?: Partial<Record<ServiceName, Record<string, string>>>;
  /** Default "fabric.test". */
  trustDomain?: string;
}

export interface ServiceUrls {
  /** https://127.0.0.1:<port>, mTLS gRPC. */
  grpc: string;
  /** http://127.0.0.1:<port>: /healthz, /readyz, /metrics (+ /crl, /ocsp on the CA). */
  http: string;
}

export interface Fabric {
  /** The CA directory (root, intermediate, encrypted keys, services/<name>/ identities). */
  dir: string;
  /** The passphrase the CA keys are encrypted under. */
  passphrase: string;
  trustDomain: string;
  /** The admin (superuser) URL of the fabric's database: reads every schema. */
  databaseUrl: string;
  /** The URL a service connects with, as its own login role. */
  serviceDatabaseUrl(name: ServiceName): string;
  urls: Partial<Record<ServiceName, ServiceUrls>>;
  /** A platform-admin identity. */
  admin: TlsCredentials;
  /** Issues an identity offline with the CA's intermediate (fixtures: nodes, users, admins, ...). */
  issue(claims: OfflineClaims, options?: OfflineIssueOptions): Promise<TlsCredentials>;
  /** A service's current identity as on disk (it changes when the service renews). */
  serviceIdentity(name: ServiceName): TlsCredentials;
  /** An RPC client to a running service, checking its SPIFFE ID; as `credentials` (default admin). */
  client<S extends DescService>(service: S, target: ServiceName, credentials?: TlsCredentials): Client<S>;
  /** What a service process printed so far (for failure messages). */
  output(name: ServiceName): string;
  /** The process id of a running service (e.g. to read its CPU time in a bench). */
  pid(name: ServiceName): number | undefined;
  /** SIGTERM and wait for exit. */
  stop(name: ServiceName): Promise<void>;
  /** SIGKILL and wait for exit. */
  kill(name: ServiceName): Promise<void>;
  /** Starts a stopped service again with the same ports and environment; waits for /readyz. */
  start(name: ServiceName): Promise<void>;
  /** Stops every service, drops the database, removes the directory. */
  close(): Promise<void>;
}

export async function startFabric(options: StartFabricOptions): Promise<Fabric> {
  const requested = SERVICE_ORDER.filter((s) => options.services.includes(s));
  const trustDomain = options.trustDomain ?? "fabric.test";
  const passphrase = randomBytes(18).toString("base64url");
  const dir = mkdtempSync(join(tmpdir(), "fabric-"));
  const children = new Map<ServiceName, ChildService>();
  // The latest process of each service, kept after it exits so its output can still be read.
  const latest = new Map<ServiceName, ChildService>();
  let database: TestDatabase | undefined;

  const cleanup = async () => {
    for (const name of [...requested].reverse()) await children.get(name)?.stop();
    children.clear();
    await database?.drop();
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const urls: Partial<Record<ServiceName, ServiceUrls>> = {};
    const ports: Partial<Record<ServiceName, { grpc: number; http: number }>> = {};
    for (const name of requested) {
      const p = { grpc: await freePort(), http: await freePort() };
      ports[name] = p;
      urls[name] = { grpc: `https://127.0.0.1:${p.grpc}`, http: `http://127.0.0.1:${p.http}` };
    }
    // Certificates issued offline must point at the CA's CRL and OCSP on the port it will listen on.
    const caHttp = urls.ca?.http ?? "http://127.0.0.1:7410";
    await initCa({ dir, trustDomain, passphrase, crlUrl: `${caHttp}/crl`, ocspUrl: `${caHttp}/ocsp` });
    database = await createTestDatabase("fabric");
    const databaseUrl = database.url;
    const db = database;
    await Promise.all(
      requested.map((name) =>
        bootstrapServiceDatabase({
          adminUrl: databaseUrl,
          serviceUrl: db.serviceUrl(name),
          schema: name,
          dir: join(REPO, "services", name, "migrations"),
        }),
      ),
    );
    const issuer = await OfflineIssuer.open({ caDir: dir, passphrase });

    const peerUrls: Record<string, string> = {};
    for (const name of requested) peerUrls[`FABRIC_${name.toUpperCase()}_URL`] = urls[name]!.grpc;
    const envOf = (name: ServiceName): Record<string, string> => ({
      FABRIC_IDENTITY_DIR: serviceIdentityDir(dir, name),
      DATABASE_URL: db.serviceUrl(name),
      FABRIC_TRUST_DOMAIN: trustDomain,
      FABRIC_HOST: "127.0.0.1",
      FABRIC_GRPC_PORT: String(ports[name]!.grpc),
      FABRIC_HTTP_PORT: String(ports[name]!.http),
      FABRIC_LOG_LEVEL: "warn",
      ...peerUrls,
      ...(name === "ca" ? { FABRIC_CA_DIR: dir, FABRIC_CA_PASSPHRASE: passphrase } : {}),
      ...options.env?.[name],
    });
    const start = async (name: ServiceName) => {
      if (!requested.includes(name)) throw new Error(`${name} was not requested from startFabric`);
      if (children.has(name)) throw new Error(`${name} is already running`);
      const child = await spawnTs(join(REPO, "services", name, "src", "main.ts"), {
        env: envOf(name),
        readyUrl: `${urls[name]!.http}/readyz`,
        timeoutMs: 45_000,
      });
      children.set(name, child);
      latest.set(name, child);
    };
    const running = (name: ServiceName) => {
      const child = children.get(name);
      if (!child) throw new Error(`${name} is not running`);
      return child;
    };

    for (const name of requested) await start(name);
    const admin = issuer.issue({ kind: "admin", id: "platform-admin", grant: "platform-admin" });

    return {
      dir,
      passphrase,
      trustDomain,
      databaseUrl,
      serviceDatabaseUrl: (name) => db.serviceUrl(name),
      urls,
      admin,
      issue: async (claims, issueOptions) => issuer.issue(claims, issueOptions),
      serviceIdentity: (name) => loadIdentity(serviceIdentityDir(dir, name)),
      client: (service, target, credentials = admin) => {
        const url = urls[target]?.grpc;
        if (!url) throw new Error(`${target} was not requested from startFabric`);
        return createRpcClient(service, {
          url,
          credentials,
          expectServerId: buildSpiffeId({ trustDomain, kind: "service", id: target }),
        });
      },
      output: (name) => latest.get(name)?.output() ?? "",
      pid: (name) => children.get(name)?.process.pid,
      async stop(name) {
        await running(name).stop();
        children.delete(name);
      },
      async kill(name) {
        await running(name).kill();
        children.delete(name);
      },
      start,
      close: cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
