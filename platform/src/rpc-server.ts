import { constants } from "node:crypto";
import http2 from "node:http2";
import type { Server as HttpServer } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { DescService } from "@bufbuild/protobuf";
import {
  createContextValues,
  type ConnectRouter,
  type Interceptor,
  type ServiceImpl,
} from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Counter, Gauge, type Registry } from "prom-client";
import {
  authorizationInterceptor,
  type AuthorizationRefusal,
  type Policy,
  type PolicyBinding,
  type Rule,
} from "./authorization.js";
import { systemClock, type Clock } from "./clock.js";
import { HEALTH_POLICY, HealthState, registerHealthService } from "./health.js";
import {
  applyHttp1Limits,
  ConnectionLimiter,
  DEFAULT_LISTENER_LIMITS,
  DEFAULT_PLAIN_LISTENER_LIMITS,
  http2LimitOptions,
  limitAnonymousRequests,
  type ListenerLimits,
  type ListenerRefusal,
  type ListenerStats,
} from "./listener-limits.js";
import type { Logger } from "./logger.js";
import { createMetricsRegistry, rpcMetricsInterceptor } from "./metrics.js";
import { createPlainHttpServer, type PlainRoute } from "./plain-http.js";
import { kPeer, peerIdentityOf } from "./principal.js";
import { READ_MAX_BYTES, refuseUndecodable } from "./request-decoding.js";
import { REFLECTION_POLICIES, registerReflectionService } from "./reflection.js";
import { kRemoteAddress, remoteAddressOf } from "./remote-address.js";
import { RevocationSet } from "./revocation.js";
import { errorInterceptor } from "./rpc-errors.js";
import { secureContextOptions, type TlsCredentials } from "./tls-credentials.js";
import { tracingInterceptor } from "./tracing.js";

/** A service this server hosts, with its authorization table. */
export interface ServiceRegistration<S extends DescService = DescService> {
  service: S;
  implementation: Partial<ServiceImpl<S>>;
  policy: Policy<S>;
}

/** Keeps the generic parameter tied between service, implementation and policy at the call site. */
export function serve<S extends DescService>(
  service: S,
  implementation: Partial<ServiceImpl<S>>,
  policy: Policy<S>,
): ServiceRegistration {
  return { service, implementation, policy } as unknown as ServiceRegistration;
}

export interface RpcServerOptions {
  /** Process name for logs and metrics: ca, enrollment, registry, router. */
  name: string;
  trustDomain: string;
  credentials: TlsCredentials;
  /**
   * required (default): the TLS handshake itself refuses peers without a certificate from our CA.
   * optional: peers may connect without one, and only RPCs whose rule is `anonymous` accept them.
   */
  clientCertificates?: "required" | "optional";
  host?: string;
  /** 0 picks a free port. */
  grpcPort: number;
  httpPort: number;
  services: ServiceRegistration[];
  logger: Logger;
  revocations?: RevocationSet;
  metrics?: Registry;
  httpRoutes?: Record<string, PlainRoute>;
  /** Told of every call the authorization table refuses (the service audits them). */
  onRefusal?: (refusal: AuthorizationRefusal) => void;
  /** Extra interceptors, run inside authorization (closest to the handlers). */
  interceptors?: Interceptor[];
  /** How long close() lets open streams finish before cutting them. */
  shutdownGraceMs?: number;
  /** Time for certificate validity, stream re-checks and idle connections. Default: the system clock. */
  clock?: Clock;
  /** Limits of the mTLS gRPC port, over DEFAULT_LISTENER_LIMITS (listener-limits.ts). */
  limits?: Partial<ListenerLimits>;
  /** Limits of the plain HTTP port, over DEFAULT_PLAIN_LISTENER_LIMITS. */
  plainLimits?: Partial<ListenerLimits>;
  /** Periodic re-check of open streams' identities (default STREAM_RECHECK_MS, identity-validity.ts). */
  streamRecheckMs?: number;
}

export interface RpcServer {
  grpcPort: number;
  httpPort: number;
  /** https://host:port of the mTLS gRPC listener. */
  grpcUrl: string;
  /** http://host:port of the plain listener. */
  httpUrl: string;
  health: HealthState;
  revocations: RevocationSet;
  metrics: Registry;
  /** Readiness for /readyz and grpc health; starts false until the service says it is ready. */
  setReady(ready: boolean): void;
  /** Swaps the server's own certificate (service renewal) without dropping connections. */
  updateCredentials(credentials: TlsCredentials): void;
  /** What clients hold on each listener right now. */
  listenerStats(): { grpc: ListenerStats; http: ListenerStats };
  close(): Promise<void>;
}

/** The one RPC server factory: mTLS gRPC + gRPC-web + Connect on one port, plus the plain HTTP port. */
export async function createRpcServer(options: RpcServerOptions): Promise<RpcServer> {
  const host = options.host ?? "127.0.0.1";
  const logger = options.logger;
  const revocations = options.revocations ?? new RevocationSet();
  const metrics = options.metrics ?? createMetricsRegistry(options.name);
  const health = new HealthState(options.services.map((s) => s.service.typeName));
  const shutdown = new AbortController();
  const clock = options.clock ?? systemClock;
  const limits: ListenerLimits = { ...DEFAULT_LISTENER_LIMITS, ...options.limits };
  const plainLimits: ListenerLimits = { ...DEFAULT_PLAIN_LISTENER_LIMITS, ...options.plainLimits };
  const listenerRefusals = new Counter({
    name: "fabric_listener_refusals_total",
    help: "Connections and streams a listener refused or cut for going past its limits, by reason.",
    labelNames: ["listener", "reason"],
    registers: [metrics],
  });
  const refused = (listener: string) => (reason: ListenerRefusal) =>
    listenerRefusals.inc({ listener, reason });
  const limiter = new ConnectionLimiter(limits, clock, refused("grpc"));
  let ready = false;

  const bindings: PolicyBinding[] = [
    ...options.services.map((s) => ({ service: s.service, policy: s.policy as Record<string, Rule> })),
    HEALTH_POLICY,
    ...REFLECTION_POLICIES,
  ];
  const routes = (router: ConnectRouter) => {
    for (const s of options.services) router.service(s.service, s.implementation as ServiceImpl<DescService>);
    registerHealthService(router, health);
    registerReflectionService(
      router,
      options.services.map((s) => s.service),
    );
    router.handlers.splice(
      0,
      router.handlers.length,
      ...router.handlers.map((h) =>
        limitAnonymousRequests(refuseUndecodable(h), limits.maxAnonymousRequestBytes),
      ),
    );
  };

  const handler = connectNodeAdapter({
    routes,
    grpc: true,
    grpcWeb: true,
    connect: true,
    shutdownSignal: shutdown.signal,
    // Fabric's messages are small and mostly incompressible (keys, signatures): compression costs CPU
    // on the hot paths (issuance, snapshots) for little gain.
    acceptCompression: [],
    readMaxBytes: READ_MAX_BYTES,
    interceptors: [
      tracingInterceptor("server"),
      rpcMetricsInterceptor(metrics),
      errorInterceptor(logger),
      authorizationInterceptor(bindings, {
        revocations,
        clock,
        ...(options.onRefusal ? { onRefusal: options.onRefusal } : {}),
        ...(options.streamRecheckMs ? { streamRecheckMs: options.streamRecheckMs } : {}),
      }),
      ...(options.interceptors ?? []),
    ],
    contextValues: (req) =>
      createContextValues()
        .set(kPeer, peerIdentityOf(req, options.trustDomain))
        .set(kRemoteAddress, remoteAddressOf(req)),
  });

  const server = http2.createSecureServer(
    {
      ...secureContextOptions(options.credentials),
      requestCert: true,
      rejectUnauthorized: (options.clientCertificates ?? "required") === "required",
      allowHTTP1: true, // gRPC-web and Connect clients may speak HTTP/1.1
      // Fabric's clients keep their connections rather than resume TLS sessions; tickets would only cost
      // 8-15 KiB per connection (measured with 10,000 agents on one router).
      secureOptions: constants.SSL_OP_NO_TICKET,
      ...http2LimitOptions(limits),
    },
    limiter.wrap(handler),
  );
  applyHttp1Limits(server, limits);
  // http2Server.close() waits for open sessions: track them (and HTTP/1 sockets) so shutdown can end them.
  const sessions = new Set<http2.ServerHttp2Session>();
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => limiter.accept(socket, "handshake"));
  server.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
    limiter.session(session);
  });
  server.on("secureConnection", (socket: TLSSocket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    limiter.secured(socket);
  });
  server.on("tlsClientError", (err) => logger.debug({ err: err.message }, "tls handshake refused"));

  const plain = createPlainHttpServer({
    host,
    port: options.httpPort,
    metrics,
    isReady: () => ready,
    ...(options.httpRoutes ? { routes: options.httpRoutes } : {}),
    limits: plainLimits,
    clock,
    onRefused: refused("http"),
  });
  new Gauge({
    name: "fabric_listener_connections",
    help: "Open connections per listener: in their TLS handshake, anonymous, or with a client certificate.",
    labelNames: ["listener", "kind"],
    registers: [metrics],
    collect() {
      for (const [listener, stats] of [
        ["grpc", limiter.stats()],
        ["http", plain.limiter.stats()],
      ] as const) {
        const { connections, handshakes, anonymousConnections } = stats;
        this.set({ listener, kind: "handshake" }, handshakes);
        this.set({ listener, kind: "anonymous" }, anonymousConnections);
        this.set({ listener, kind: "authenticated" }, connections - handshakes - anonymousConnections);
      }
    },
  });

  await listen(server, options.grpcPort, host);
  await listen(plain, options.httpPort, host).catch(async (err) => {
    server.close();
    throw err;
  });
  const grpcPort = (server.address() as AddressInfo).port;
  const httpPort = (plain.address() as AddressInfo).port;
  logger.info({ grpcPort, httpPort, host }, `${options.name} listening`);

  return {
    grpcPort,
    httpPort,
    grpcUrl: `https://${host}:${grpcPort}`,
    httpUrl: `http://${host}:${httpPort}`,
    health,
    revocations,
    metrics,
    setReady(value) {
      ready = value;
      health.setAll(value ? "SERVING" : "NOT_SERVING");
    },
    updateCredentials(credentials) {
      server.setSecureContext(secureContextOptions(credentials));
    },
    listenerStats: () => ({ grpc: limiter.stats(), http: plain.limiter.stats() }),
    async close() {
      ready = false;
      health.setAll("NOT_SERVING");
      shutdown.abort();
      const closed = Promise.all([closeServer(server), closeServer(plain)]);
      const grace = setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, options.shutdownGraceMs ?? 2_000);
      // GOAWAY to HTTP/2 clients; streams ended by the shutdown signal finish on their own.
      for (const session of sessions) session.close();
      await closed;
      clearTimeout(grace);
    },
  };
}

function listen(server: http2.Http2SecureServer | HttpServer, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

function closeServer(server: http2.Http2SecureServer | HttpServer): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
