import { constants } from "node:crypto";
import http2 from "node:http2";
import type { Server as HttpServer } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { DescService } from "@bufbuild/protobuf";
import {
  createContextValues,
  type ConnectRouter,
  type Interceptor,
  type ServiceImpl,
} from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Registry } from "prom-client";
import {
  authorizationInterceptor,
  type AuthorizationRefusal,
  type Policy,
  type PolicyBinding,
  type Rule,
} from "./authorization.js";
import { HEALTH_POLICY, HealthState, registerHealthService } from "./health.js";
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
    router.handlers.splice(0, router.handlers.length, ...router.handlers.map(refuseUndecodable));
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
      authorizationInterceptor(bindings, revocations, options.onRefusal),
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
    },
    handler,
  );
  // http2Server.close() waits for open sessions: track them (and HTTP/1 sockets) so shutdown can end them.
  const sessions = new Set<http2.ServerHttp2Session>();
  const sockets = new Set<Socket>();
  server.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  server.on("secureConnection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  server.on("tlsClientError", (err) => logger.debug({ err: err.message }, "tls handshake refused"));

  const plain = createPlainHttpServer({
    host,
    port: options.httpPort,
    metrics,
    isReady: () => ready,
    ...(options.httpRoutes ? { routes: options.httpRoutes } : {}),
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
