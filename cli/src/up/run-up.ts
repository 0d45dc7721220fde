import { randomBytes } from "node:crypto";
import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { caDefinition, serviceIdentityDir } from "@fabric/ca";
import { enrollmentDefinition } from "@fabric/enrollment";
import {
  bootstrapServiceDatabase,
  buildSpiffeId,
  createRpcClient,
  loadIdentity,
  roleUrl,
  serviceRoleName,
  type ServiceName,
  type TlsCredentials,
} from "@fabric/platform";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { registryService } from "@fabric/registry";
import { routerDefinition } from "@fabric/router";
import { CliError } from "../cli-error.js";
import { ConfigFile } from "../config-file.js";
import { EXIT } from "../exit-codes.js";
import type { Io } from "../io.js";
import {
  DEFAULT_CLUSTER_ID,
  LOCAL_ADMIN_ID,
  LOCAL_CONTEXT,
  localPaths,
  type LocalPaths,
} from "../local-fabric.js";
import { formatTable, type Output } from "../output.js";
import { startProgress } from "../progress.js";
import { logTail, serviceMain, spawnTypeScript, type Supervised } from "./child-processes.js";
import { startEmbeddedPostgres, type EmbeddedDatabase } from "./embedded-postgres.js";
import {
  SERVICE_START_ORDER,
  endpointsFor,
  serviceEnvironment,
  type DefinedSettings,
  type Endpoints,
} from "./launch-plan.js";
import { ensureAdminIdentity, openOrCreateCa, refreshServiceIdentities } from "./local-ca.js";
import { waitUntilReady } from "./readiness.js";
import { claimUpState, releaseUpState, writeUpState } from "./up-state.js";

const DEFINITIONS: Record<ServiceName, DefinedSettings & { migrationsDir: string }> = {
  ca: caDefinition,
  enrollment: enrollmentDefinition,
  registry: registryService,
  router: routerDefinition,
};

const READY_TIMEOUT_MS = 90_000;
const SERVICE_STOP_GRACE_MS = 15_000;

export interface UpOptions {
  home: string;
  /** Only used when the CA is created. */
  trustDomain?: string;
  host: string;
  portOffset: number;
  /** Explicit ports; the rest are each service's default plus the offset. */
  ports: Partial<Record<ServiceName, { grpcPort?: number; httpPort?: number }>>;
  postgresPort: number;
  /** An existing database (DATABASE_URL); without it the embedded Postgres is used. */
  databaseUrl?: string;
  env: NodeJS.ProcessEnv;
}

/**
 * Bootstraps each service's database with the admin URL (its login role, schema, migrations and grants)
 * and returns the URL each service connects with as that role, so no service process sees the admin URL.
 * Each start sets a fresh random password per role; it lives only in the services' environments.
 */
async function bootstrapDatabases(adminUrl: string): Promise<Record<ServiceName, string>> {
  const urls = {} as Record<ServiceName, string>;
  for (const name of SERVICE_START_ORDER) {
    urls[name] = roleUrl(adminUrl, serviceRoleName(name), randomBytes(24).toString("hex"));
    await bootstrapServiceDatabase({
      adminUrl,
      serviceUrl: urls[name],
      schema: name,
      dir: DEFINITIONS[name].migrationsDir,
    });
  }
  return urls;
}

/** The default ports of the four services, from their definitions, shifted by an offset. */
export function servicePorts(options: Pick<UpOptions, "portOffset" | "ports">) {
  return Object.fromEntries(
    SERVICE_START_ORDER.map((name) => {
      const defaults = DEFINITIONS[name].defaults;
      const given = options.ports[name] ?? {};
      return [
        name,
        {
          grpcPort: given.grpcPort ?? defaults.grpcPort + options.portOffset,
          httpPort: given.httpPort ?? defaults.httpPort + options.portOffset,
        },
      ];
    }),
  ) as Record<ServiceName, { grpcPort: number; httpPort: number }>;
}

/**
 * `fabric up`: a whole Fabric on this machine. Creates the CA if there is none, starts Postgres (embedded,
 * unless DATABASE_URL is given) and the four services as child processes in dependency order, waiting
 * for each to be ready, makes sure the `default` cluster, a platform-admin identity and the `local`
 * context exist, prints the endpoints, then runs until SIGINT/SIGTERM (or until a service dies) and
 * stops the services in reverse order, then Postgres. Progress goes to stderr; the endpoints to stdout.
 */
export async function runUp(options: UpOptions, io: Io, output: Output): Promise<void> {
  const paths = localPaths(options.home);
  mkdirSync(paths.logsDir, { recursive: true, mode: 0o700 });
  const { stale } = claimUpState(paths);
  const say = (line: string) => io.err(`${line}\n`);
  if (stale) say("note: the previous fabric up did not stop cleanly; starting again with the same data");

  const interrupted = new AbortController();
  const services: Supervised[] = [];
  let database: EmbeddedDatabase | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted.signal.aborted) {
      say(`${signal} again: killing the services and Postgres now`);
      for (const s of services) s.kill();
      database?.process.kill();
      return;
    }
    say(`${signal}: stopping Fabric (services first, then the database)…`);
    interrupted.abort(signal);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  try {
    const endpoints = endpointsFor(options.host, servicePorts(options));
    const ca = await openOrCreateCa(paths, {
      dir: paths.caDir,
      env: options.env,
      ...(options.trustDomain ? { trustDomain: options.trustDomain } : {}),
      crlUrl: `${endpoints.ca.http}/crl`,
      ocspUrl: `${endpoints.ca.http}/ocsp`,
      mayExist: true,
    });
    const trustDomain = ca.status.trustDomain;
    say(
      ca.created
        ? `created a CA for trust domain ${trustDomain} in ${ca.dir} (root SHA-256 ${ca.status.root.fingerprintSha256}); ` +
            `its passphrase ${ca.passphrase.source === "generated" ? `is stored in ${paths.passphraseFile} (0600)` : `comes from ${ca.passphrase.source}`}`
        : `using the CA in ${ca.dir} (trust domain ${trustDomain})`,
    );
    const refreshed = refreshServiceIdentities(ca);
    if (refreshed.length > 0 && !ca.created) {
      say(`re-issued the service identities (expired or due while stopped: ${refreshed.join(", ")})`);
    }
    const admin = ensureAdminIdentity(ca, paths.certsDir);
    if (admin.issued) say(`wrote the platform-admin identity to ${admin.dir}`);

    // Children get our environment minus what is not theirs: the CA passphrase goes to the CA only, and a
    // FABRIC_CONFIG file would be read by all four services at once.
    const baseEnv: NodeJS.ProcessEnv = { ...options.env };
    delete baseEnv.FABRIC_CA_PASSPHRASE;
    delete baseEnv.FABRIC_CONFIG;
    delete baseEnv.FABRIC_DATABASE_ADMIN_URL;

    let databaseUrl = options.databaseUrl;
    if (databaseUrl) {
      say("using the database in DATABASE_URL");
    } else {
      const progress = startProgress(
        io,
        `starting the embedded Postgres on 127.0.0.1:${options.postgresPort}`,
      );
      try {
        database = await startEmbeddedPostgres(paths, options.postgresPort, baseEnv);
      } catch (err) {
        progress.done("the embedded Postgres did not start");
        throw err;
      }
      databaseUrl = database.url;
      progress.done(
        `postgres   ready on 127.0.0.1:${options.postgresPort} (${database.initialised ? "new" : "existing"} data in ` +
          `${database.relocatedTo ?? paths.postgresDir})`,
      );
      if (database.relocatedTo) {
        say(
          `note: the postgres user cannot reach ${paths.home}, so the data lives in ${database.relocatedTo} ` +
            `(linked from ${paths.postgresDir})`,
        );
      }
    }

    const serviceDatabaseUrls = await bootstrapDatabases(databaseUrl).catch((err: unknown) => {
      throw new CliError(
        EXIT.failure,
        `could not set up the services' database roles and schemas: ${(err as Error).message}`,
        "the user in DATABASE_URL must be a superuser, or may create roles and owns the database",
      );
    });
    say(`database   roles ${SERVICE_START_ORDER.map(serviceRoleName).join(", ")} ready (schemas migrated)`);

    for (const name of SERVICE_START_ORDER) {
      if (interrupted.signal.aborted) break;
      const logFile = join(paths.logsDir, `${name}.log`);
      appendFileSync(logFile, `--- fabric up ${new Date().toISOString()} ---\n`, { mode: 0o600 });
      const env = {
        ...baseEnv,
        ...serviceEnvironment(DEFINITIONS[name], {
          endpoints,
          host: options.host,
          trustDomain,
          databaseUrl: serviceDatabaseUrls[name],
          identityDir: serviceIdentityDir(ca.dir, name),
          ...(name === "ca" ? { ca: { dir: ca.dir, passphrase: ca.passphrase.setting } } : {}),
        }),
      };
      const started = Date.now();
      const child = spawnTypeScript(name, serviceMain(name), { env, logFile });
      services.push(child);
      const progress = startProgress(io, `${name.padEnd(10)} starting (pid ${child.child.pid})`);
      try {
        await waitUntilReady(`${endpoints[name].http}/readyz`, child, READY_TIMEOUT_MS, interrupted.signal);
      } catch (err) {
        progress.done(`${name.padEnd(10)} not ready`);
        if (interrupted.signal.aborted) break;
        throw new CliError(
          EXIT.failure,
          `the ${name} service did not start: ${(err as Error).message}`,
          `its log is ${logFile}; it ends with:\n${logTail(logFile)}`,
        );
      }
      progress.done(
        `${name.padEnd(10)} ready in ${((Date.now() - started) / 1000).toFixed(1)}s: ${endpoints[name].grpc} (plain ${endpoints[name].http})`,
      );
    }
    if (interrupted.signal.aborted) return;

    const adminCredentials = loadIdentity(admin.dir);
    const clusterCreated = await ensureDefaultCluster(endpoints, trustDomain, adminCredentials);
    if (clusterCreated) say(`created cluster "${DEFAULT_CLUSTER_ID}"`);
    writeLocalContext(paths, trustDomain, endpoints);
    writeUpState(paths, {
      pid: process.pid,
      startedAt: new Date().toISOString(),
      trustDomain,
      databaseUrl,
      endpoints,
    });

    const summary = {
      trustDomain,
      context: LOCAL_CONTEXT,
      identityDir: admin.dir,
      caDir: ca.dir,
      caBundle: ca.rootPemPath,
      rootFingerprintSha256: ca.status.root.fingerprintSha256,
      cluster: DEFAULT_CLUSTER_ID,
      database: database ? "embedded" : "external",
      logs: paths.logsDir,
      services: Object.fromEntries(
        SERVICE_START_ORDER.map((n) => [n, { grpc: endpoints[n].grpc, http: endpoints[n].http }]),
      ),
    };
    output.print(summary, () => upSummary(summary));

    const died = Promise.race(
      services.map((s) => s.exited.then((how) => ({ name: s.name, how, logFile: s.logFile }))),
    );
    const ended = await Promise.race([
      died,
      new Promise<undefined>((resolve) =>
        interrupted.signal.addEventListener("abort", () => resolve(undefined)),
      ),
    ]);
    if (ended) {
      throw new CliError(
        EXIT.failure,
        `the ${ended.name} service exited (${ended.how}); stopping the rest`,
        `its log is ${ended.logFile}; it ends with:\n${logTail(ended.logFile)}`,
      );
    }
  } finally {
    for (const s of [...services].reverse()) {
      if (!s.running()) continue;
      const how = await s.stop(SERVICE_STOP_GRACE_MS);
      say(`${s.name.padEnd(10)} stopped (${how})`);
    }
    if (database) {
      await database.stop();
      say("postgres   stopped");
    }
    releaseUpState(paths);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/** Creates the `default` cluster unless it exists; true when this call created it. */
async function ensureDefaultCluster(
  endpoints: Endpoints,
  trustDomain: string,
  admin: TlsCredentials,
): Promise<boolean> {
  const registry = createRpcClient(RegistryService, {
    url: endpoints.registry.grpc,
    credentials: admin,
    expectServerId: buildSpiffeId({ trustDomain, kind: "service", id: "registry" }),
  });
  try {
    await registry.getCluster({ clusterId: DEFAULT_CLUSTER_ID });
    return false;
  } catch (err) {
    if (!(err instanceof ConnectError) || err.code !== Code.NotFound) throw err;
  }
  await registry.createCluster({
    clusterId: DEFAULT_CLUSTER_ID,
    name: "Default cluster",
    description: "created by fabric up",
  });
  return true;
}

/** The `local` context: this machine's services and its platform-admin; made the current context. */
function writeLocalContext(paths: LocalPaths, trustDomain: string, endpoints: Endpoints): void {
  const config = ConfigFile.read(paths.home);
  config.setContext(LOCAL_CONTEXT, {
    "trust-domain": trustDomain,
    identity: LOCAL_ADMIN_ID,
    servers: Object.fromEntries(SERVICE_START_ORDER.map((n) => [n, endpoints[n].grpc])),
  });
  config.use(LOCAL_CONTEXT);
}

function upSummary(s: {
  trustDomain: string;
  context: string;
  identityDir: string;
  caBundle: string;
  rootFingerprintSha256: string;
  logs: string;
  services: Record<string, { grpc: string; http: string }>;
}): string {
  return [
    `Fabric is up (trust domain ${s.trustDomain}).`,
    "",
    formatTable(
      ["SERVICE", "GRPC (MTLS)", "PLAIN HTTP"],
      Object.entries(s.services).map(([name, e]) => [name, e.grpc, e.http]),
    ),
    `admin identity   ${s.identityDir} (platform-admin), context "${s.context}" is current`,
    `CA root          ${s.caBundle} (SHA-256 ${s.rootFingerprintSha256})`,
    `logs             ${s.logs}`,
    "",
    "In another terminal: `fabric whoami`, `fabric token create --roles relay-node`, `fabric node ls`.",
    "Ctrl-C stops everything; `fabric up` again resumes with the same data.",
    "",
  ].join("\n");
}
