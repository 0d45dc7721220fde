import type { DescService } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import type { Registry } from "prom-client";
import { z } from "zod";
import { AuditCheckpoints } from "./audit-checkpoints.js";
import { auditHandlers, type AuditHandlers } from "./audit-rpc.js";
import { exitOnConfigError, loadConfig, setting } from "./config.js";
import { createPool, type Pool } from "./database.js";
import { bootstrapServiceDatabase, prepareServiceDatabase } from "./database-roles.js";
import { loadIdentity } from "./identity-store.js";
import { createLogger, type Logger } from "./logger.js";
import { createMetricsRegistry } from "./metrics.js";
import type { ServiceName } from "./pki/principal-kinds.js";
import { buildSpiffeId, isValidTrustDomain } from "./pki/spiffe.js";
import type { PlainRoute } from "./plain-http.js";
import { followRevocations } from "./revocation-feed.js";
import { RevocationSet } from "./revocation.js";
import { createRpcClient } from "./rpc-client.js";
import { survivePingTimeouts } from "./ping-timeouts.js";
import { auditRefusals } from "./refusal-audit.js";
import { DEFAULT_LISTENER_LIMITS } from "./listener-limits.js";
import { refusalAuditorFor } from "./refusal-auditor.js";
import { createRpcServer, type RpcServer, type ServiceRegistration } from "./rpc-server.js";
import { ServiceIdentity, renewThroughCa } from "./service-identity.js";
import type { TlsCredentials } from "./tls-credentials.js";
import { startTracing } from "./tracing.js";

/** Settings every service process has (FABRIC_<NAME> in the environment, or the YAML file). */
export function baseSettings(defaults: { grpcPort: number; httpPort: number }) {
  return {
    trustDomain: z
      .string()
      .refine(isValidTrustDomain, "must be a lowercase DNS-like name")
      .default("fabric.local"),
    host: setting.host(),
    grpcPort: setting.port(defaults.grpcPort),
    httpPort: setting.port(defaults.httpPort),
    databaseUrl: setting.url(),
    databaseAdminUrl: setting.url().optional(),
    dbPoolSize: z.coerce.number().int().min(1).max(200).default(10),
    identityDir: setting.path(),
    caUrl: setting.url().optional(),
    logLevel: setting.logLevel(),
    traceFile: setting.path().optional(),
    otlpEndpoint: setting.url().optional(),
    auditCheckpointMs: setting.durationMs(60_000),
    // Listener limits (listener-limits.ts): the defaults suit one address's honest clients; a host that
    // fronts thousands of agents from one address (a NAT, the fan-out bench) raises them.
    maxConcurrentStreams: limit(DEFAULT_LISTENER_LIMITS.maxConcurrentStreams),
    maxConnectionsPerAddress: limit(DEFAULT_LISTENER_LIMITS.maxConnectionsPerAddress),
    maxHandshakesPerAddress: limit(DEFAULT_LISTENER_LIMITS.maxHandshakesPerAddress),
    maxAnonymousConnectionsPerAddress: limit(DEFAULT_LISTENER_LIMITS.maxAnonymousConnectionsPerAddress),
    maxAnonymousStreamsPerAddress: limit(DEFAULT_LISTENER_LIMITS.maxAnonymousStreamsPerAddress),
  };
}

const limit = (fallback: number) => z.coerce.number().int().min(1).max(1_000_000).default(fallback);

type BaseShape = ReturnType<typeof baseSettings>;

export interface ServiceContext<C> {
  name: ServiceName;
  config: C;
  logger: Logger;
  pool: Pool;
  identity: ServiceIdentity;
  revocations: RevocationSet;
  metrics: Registry;
  /** Aborted when the service shuts down. */
  signal: AbortSignal;
  /** A client to another Fabric service, authenticated with this service's current identity. */
  client<S extends DescService>(service: S, url: string, peer: ServiceName): Client<S>;
  /** ListAudit and VerifyAudit over this service's audit log, for its RPC implementation. */
  audit: AuditHandlers;
}

/** What a service plugs into the runtime. */
export interface ServiceParts {
  services: ServiceRegistration[];
  httpRoutes?: Record<string, PlainRoute>;
  /** After the listeners are up (background loops, feeds). */
  start?(server: RpcServer): Promise<void> | void;
  /** Before the database pool closes. */
  stop?(): Promise<void> | void;
  /** Resolves when the service's own state is loaded; /readyz and grpc health wait for it too. */
  ready?: Promise<void>;
}

export interface ServiceDefinition<X extends z.ZodRawShape, C = z.infer<z.ZodObject<BaseShape & X>>> {
  name: ServiceName;
  defaults: { grpcPort: number; httpPort: number };
  /** Service-specific settings on top of baseSettings. */
  settings: X;
  /** Folder of this service's numbered SQL migrations. */
  migrationsDir: string;
  clientCertificates?: "required" | "optional";
  /**
   * How the service renews its own identity. Default: a fresh key signed through the CA's Sign
   * (needs caUrl). The CA passes its own local issuance.
   */
  renew?: (ctx: ServiceContext<C>) => (current: TlsCredentials) => Promise<TlsCredentials>;
  /**
   * Where the revoked set comes from. "ca" (default): follow the CA's WatchRevocations, ready once the
   * first list is in. "self": the service feeds ctx.revocations itself (the CA).
   */
  revocationSource?: "ca" | "self";
  build(ctx: ServiceContext<C>): Promise<ServiceParts> | ServiceParts;
}

export interface RunningService<C> {
  server: RpcServer;
  context: ServiceContext<C>;
  close(): Promise<void>;
}

/** Boots a service: config, tracing, logs, migrations, pool, identity, revocations, server, renewal. */
export async function startService<X extends z.ZodRawShape>(
  def: ServiceDefinition<X>,
  env: NodeJS.ProcessEnv = process.env,
): Promise<RunningService<z.infer<z.ZodObject<BaseShape & X>>>> {
  type C = z.infer<z.ZodObject<BaseShape & X>>;
  const schema = z.object({ ...baseSettings(def.defaults), ...def.settings });
  const config = loadConfig(schema, { env, aliases: { databaseUrl: "DATABASE_URL" } }) as C &
    z.infer<z.ZodObject<BaseShape>>;
  const tracing = await startTracing({
    service: def.name,
    ...(config.traceFile ? { traceFile: config.traceFile } : {}),
    ...(config.otlpEndpoint ? { otlpEndpoint: config.otlpEndpoint } : {}),
  });
  const logger = createLogger({ service: def.name, level: config.logLevel });
  // From here on the service connects only as its own unprivileged role; the admin URL is not kept.
  config.databaseUrl = await prepareServiceDatabase({
    url: config.databaseUrl,
    ...(config.databaseAdminUrl ? { adminUrl: config.databaseAdminUrl } : {}),
    schema: def.name,
    dir: def.migrationsDir,
  });
  delete config.databaseAdminUrl;
  const pool = createPool({ url: config.databaseUrl, schema: def.name, max: config.dbPoolSize });
  const shutdown = new AbortController();
  const revocations = new RevocationSet();
  const metrics = createMetricsRegistry(def.name);
  // The identity is created before the server it feeds, so renewals reach the server through here.
  const serverRef: { current?: RpcServer } = {};

  const initial = loadIdentity(config.identityDir);
  const peerId = (peer: ServiceName) =>
    buildSpiffeId({ trustDomain: config.trustDomain, kind: "service", id: peer });
  const client = <S extends DescService>(service: S, url: string, peer: ServiceName): Client<S> =>
    createRpcClient(service, { url, credentials: () => identity.current(), expectServerId: peerId(peer) });
  const caClient = config.caUrl ? client(CaService, config.caUrl, "ca") : undefined;

  const context: ServiceContext<C> = {
    name: def.name,
    config,
    logger,
    pool,
    get identity() {
      return identity;
    },
    revocations,
    metrics,
    signal: shutdown.signal,
    client,
    get audit() {
      return audit;
    },
  };
  const renew =
    def.renew?.(context) ??
    ((current: TlsCredentials) => {
      if (!caClient) throw new Error("FABRIC_CA_URL is not set: cannot renew the service identity");
      return renewThroughCa(caClient, def.name, current);
    });
  const identity: ServiceIdentity = new ServiceIdentity(initial, {
    dir: config.identityDir,
    renew,
    logger,
    onRenewed: (creds) => serverRef.current?.updateCredentials(creds),
  });
  const checkpoints = new AuditCheckpoints(pool, {
    service: def.name,
    trustDomain: config.trustDomain,
    identity: () => identity.current(),
    revocations,
    logger,
  });
  const audit = auditHandlers(def.name, pool, checkpoints);

  const parts = await def.build(context);
  const running = await createRpcServer({
    name: def.name,
    trustDomain: config.trustDomain,
    credentials: initial,
    clientCertificates: def.clientCertificates ?? "required",
    host: config.host,
    grpcPort: config.grpcPort,
    httpPort: config.httpPort,
    services: parts.services,
    logger,
    revocations,
    metrics,
    onRefusal: auditRefusals(pool, logger),
    limits: {
      maxConcurrentStreams: config.maxConcurrentStreams,
      maxConnectionsPerAddress: config.maxConnectionsPerAddress,
      maxHandshakesPerAddress: config.maxHandshakesPerAddress,
      maxAnonymousConnectionsPerAddress: config.maxAnonymousConnectionsPerAddress,
      maxAnonymousStreamsPerAddress: config.maxAnonymousStreamsPerAddress,
    },
    ...(parts.httpRoutes ? { httpRoutes: parts.httpRoutes } : {}),
  });
  serverRef.current = running;
  await parts.start?.(running);
  identity.start();
  checkpoints.start(config.auditCheckpointMs);

  let revocationsSynced: Promise<void> = Promise.resolve();
  if ((def.revocationSource ?? "ca") === "ca") {
    if (!caClient) throw new Error("FABRIC_CA_URL is not set: the service cannot follow revocations");
    // Not ready until the revoked set is known: a service must never admit an identity it should refuse.
    let synced!: () => void;
    revocationsSynced = new Promise<void>((resolve) => (synced = resolve));
    void followRevocations(caClient, revocations, {
      logger,
      signal: shutdown.signal,
      onSynced: () => synced(),
    });
  }
  void Promise.all([revocationsSynced, parts.ready]).then(() => {
    if (!shutdown.signal.aborted) running.setReady(true);
  });

  return {
    server: running,
    context,
    async close() {
      shutdown.abort();
      identity.stop();
      await running.close();
      await parts.stop?.();
      // After the service's own shutdown, so its last audit events are in the final checkpoint.
      await checkpoints.stop();
      // Refusals still queued are written before the pool they belong to goes.
      await refusalAuditorFor(pool, logger).close();
      await pool.end();
      await tracing.shutdown();
    },
  };
}

/**
 * `<service main> bootstrap`: readies the service's database and exits, so the long-running process
 * never holds the admin URL (a Kubernetes init container, a compose one-shot). Reads DATABASE_URL (the
 * service's own role and its password) and FABRIC_DATABASE_ADMIN_URL.
 */
async function bootstrapMain(def: { name: ServiceName; migrationsDir: string }): Promise<void> {
  const config = loadConfig(z.object({ databaseUrl: setting.url(), databaseAdminUrl: setting.url() }), {
    aliases: { databaseUrl: "DATABASE_URL" },
  });
  const applied = await bootstrapServiceDatabase({
    adminUrl: config.databaseAdminUrl,
    serviceUrl: config.databaseUrl,
    schema: def.name,
    dir: def.migrationsDir,
  });
  createLogger({ service: def.name }).info({ applied }, "database bootstrapped");
}

/**
 * Process entry: starts the service, stops cleanly on SIGTERM/SIGINT, exits 78 on bad config; with the
 * argument `bootstrap`, only readies the database (bootstrapMain).
 */
export async function runServiceMain<X extends z.ZodRawShape>(def: ServiceDefinition<X>): Promise<void> {
  if (process.argv[2] === "bootstrap") {
    await bootstrapMain(def).catch(exitOnConfigError);
    return;
  }
  let running: Awaited<ReturnType<typeof startService<X>>>;
  try {
    running = await startService(def);
  } catch (err) {
    exitOnConfigError(err);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    running.context.logger.info({ signal }, "shutting down");
    running
      .close()
      .then(() => process.exit(0))
      .catch((err: unknown) => {
        console.error(err);
        process.exit(1);
      });
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  survivePingTimeouts(running.context.logger);
}
