import http2 from "node:http2";
import https from "node:https";
import net from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus } from "@fabric/proto/grpc/health/v1/health_pb.js";
import { ServerReflection } from "@fabric/proto/grpc/reflection/v1/reflection_pb.js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_LISTENER_LIMITS, addressBucket, type ListenerLimits } from "../src/listener-limits.js";
import { createLogger } from "../src/logger.js";
import { createRpcClient } from "../src/rpc-client.js";
import { createRpcServer, type RpcServer } from "../src/rpc-server.js";
import { FakeClock } from "../src/testing/clock.js";
import { createTestPki, type TestPki } from "../src/testing/pki.js";
import type { TlsCredentials } from "../src/tls-credentials.js";
import { rawH2, type RawH2Connection } from "../src/testing/raw-h2.js";
import { fixtureService } from "./fixtures/test-service.js";

const logger = createLogger({ service: "test", level: "silent" });
const SIGN = "/fabric.ca.v1.CaService/Sign";
let pki: TestPki;
let node: TlsCredentials;
const servers: RpcServer[] = [];
const raws: RawH2Connection[] = [];

beforeAll(async () => {
  pki = await createTestPki("fabric.test");
  node = await pki.issue({ kind: "node", id: "n-1", cluster: "c1" });
});

afterEach(() => {
  for (const r of raws.splice(0)) r.destroy();
});

afterAll(async () => {
  for (const s of servers) await s.close();
});

/** An enrollment-like server: optional client certificates, its clock the test's. */
async function startServer(
  limits: Partial<ListenerLimits> = {},
  extra: { plainLimits?: Partial<ListenerLimits> } = {},
): Promise<{ server: RpcServer; clock: FakeClock }> {
  const clock = new FakeClock();
  const server = await createRpcServer({
    name: "ca",
    trustDomain: "fabric.test",
    credentials: await pki.issue({ kind: "service", id: "ca" }),
    clientCertificates: "optional",
    grpcPort: 0,
    httpPort: 0,
    services: [fixtureService()],
    logger,
    clock,
    limits,
    ...extra,
  });
  server.setReady(true);
  servers.push(server);
  return { server, clock };
}

function anonymous(server: RpcServer): RawH2Connection {
  const conn = rawH2(server.grpcUrl, { ca: pki.rootPem });
  raws.push(conn);
  return conn;
}

function authenticated(server: RpcServer): RawH2Connection {
  const conn = rawH2(server.grpcUrl, {
    ca: pki.rootPem,
    key: node.privateKeyPem,
    cert: node.certificatePem + node.chainPem.join(""),
  });
  raws.push(conn);
  return conn;
}

async function codeOf(call: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await call;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

describe("HTTP/2 stream limits", () => {
  it("caps one connection's streams at maxConcurrentStreams whatever the client sends", async () => {
    const { server } = await startServer();
    const conn = anonymous(server);
    await conn.ready;
    expect(conn.settings.get(0x3)).toBe(DEFAULT_LISTENER_LIMITS.maxConcurrentStreams);
    expect(conn.settings.get(0x6)).toBe(DEFAULT_LISTENER_LIMITS.maxHeaderBytes);

    // Streams whose request body never comes: each would hold a handler waiting for it. nghttp2 refuses
    // the streams past the limit and, when a client keeps on, drops the connection.
    const sent = conn.openStreams(1_000, SIGN).length;
    await conn.until(() => conn.resets.size >= sent - DEFAULT_LISTENER_LIMITS.maxConcurrentStreams);
    expect(server.listenerStats().grpc.streams).toBeLessThanOrEqual(
      DEFAULT_LISTENER_LIMITS.maxConcurrentStreams,
    );
  });

  it("bounds what anonymous floods from one address hold, across connections", async () => {
    const { server } = await startServer();
    const limits = DEFAULT_LISTENER_LIMITS;
    const heapBefore = process.memoryUsage().heapUsed;
    const conns = Array.from({ length: 8 }, () => anonymous(server));
    await Promise.all(conns.map((c) => c.ready));
    // Within each connection's SETTINGS, so nghttp2 admits them all: 800 held requests.
    for (const conn of conns) conn.openStreams(limits.maxConcurrentStreams, SIGN);
    const sent = conns.length * limits.maxConcurrentStreams;
    const resets = () => conns.reduce((n, c) => n + c.resets.size, 0);
    // The condition spans connections: whichever gets the last refusal sees it hold.
    await Promise.race(
      conns.map((c) => c.until(() => resets() >= sent - limits.maxAnonymousStreamsPerAddress)),
    );
    expect(server.listenerStats().grpc.streams).toBe(limits.maxAnonymousStreamsPerAddress);
    expect(conns.some((c) => c.closed)).toBe(false);
    // What the address holds is bounded by the limits, not by how many streams it sends.
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(64 * 1024 * 1024);
  });
});

describe("long-lived streams need an identity", () => {
  it("refuses anonymous health Watch and reflection, and still answers anonymous health Check", async () => {
    const { server } = await startServer();
    const anon = { caBundlePem: pki.rootPem };
    const health = createRpcClient(Health, { url: server.grpcUrl, credentials: anon, retries: 0 });
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const watchAnonymously = async () => {
      for await (const _ of health.watch({ service: "" })) break;
    };
    expect(await codeOf(watchAnonymously())).toBe(Code.Unauthenticated);

    const reflection = createRpcClient(ServerReflection, {
      url: server.grpcUrl,
      credentials: anon,
      retries: 0,
    });
    const reflectAnonymously = async () => {
      for await (const _ of reflection.serverReflectionInfo(
        (async function* () {
          yield { messageRequest: { case: "listServices" as const, value: "" } };
        })(),
      ))
        break;
    };
    expect(await codeOf(reflectAnonymously())).toBe(Code.Unauthenticated);

    const asNode = createRpcClient(Health, { url: server.grpcUrl, credentials: node, retries: 0 });
    for await (const res of asNode.watch({ service: "" })) {
      expect(res.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
      break;
    }
  });
});

describe("connections per address", () => {
  it("refuses anonymous connections past the per-address cap while the ones it has are busy", async () => {
    const { server } = await startServer({
      maxAnonymousConnectionsPerAddress: 3,
      maxConnectionsPerAddress: 5,
    });
    const busy = [anonymous(server), anonymous(server), anonymous(server)];
    await Promise.all(busy.map((c) => c.ready));
    for (const c of busy) c.openStreams(1, SIGN);
    await waitFor(() => server.listenerStats().grpc.streams === 3);

    // It completes its handshake (only then is it known to be anonymous) and is closed.
    const fourth = anonymous(server);
    await fourth.closedPromise;
    expect(busy.some((c) => c.closed)).toBe(false);

    // Authenticated connections count only against the larger cap.
    const nodes = [authenticated(server), authenticated(server)];
    await Promise.all(nodes.map((c) => c.ready));
    for (const c of nodes) c.openStreams(1, "/fabric.ca.v1.CaService/WatchRevocations");
    await waitFor(() => server.listenerStats().grpc.streams === 5);
    const sixth = authenticated(server);
    await sixth.closedPromise;
    const metrics = await server.metrics.metrics();
    expect(metrics).toMatch(
      /fabric_listener_refusals_total\{listener="grpc",reason="anonymous-connections-per-address"[^}]*\} 1/,
    );
    expect(metrics).toMatch(
      /fabric_listener_refusals_total\{listener="grpc",reason="connections-per-address"[^}]*\} 1/,
    );
  });

  it("makes room by closing the address's longest-idle connection", async () => {
    const { server } = await startServer({ maxAnonymousConnectionsPerAddress: 2 });
    const first = anonymous(server);
    await first.ready;
    const second = anonymous(server);
    await second.ready;
    const third = anonymous(server);
    await third.ready;
    await first.closedPromise;
    expect(first.goaway).toBe(0);
    expect([second.closed, third.closed]).toEqual([false, false]);
  });

  it("drops a TLS handshake that does not finish in time", async () => {
    const { server } = await startServer({ handshakeTimeoutMs: 200 });
    const socket = net.connect(server.grpcPort, "127.0.0.1");
    socket.on("error", () => {});
    await new Promise<void>((resolve) => socket.once("close", () => resolve()));
    await waitFor(() => server.listenerStats().grpc.connections === 0);
  });

  it("closes idle connections: anonymous ones sooner than authenticated ones", async () => {
    const { server, clock } = await startServer();
    const anon = anonymous(server);
    const auth = authenticated(server);
    await Promise.all([anon.ready, auth.ready]);
    clock.advance(DEFAULT_LISTENER_LIMITS.anonymousIdleTimeoutMs);
    await anon.closedPromise;
    expect(auth.closed).toBe(false);
    clock.advance(DEFAULT_LISTENER_LIMITS.idleTimeoutMs - DEFAULT_LISTENER_LIMITS.anonymousIdleTimeoutMs);
    await auth.closedPromise;
  });

  it("counts IPv6 sources per /64", () => {
    expect(addressBucket("2001:db8:1:2:aaaa::1")).toBe("2001:db8:1:2::/64");
    expect(addressBucket("2001:db8:1:2:ffff:ffff:ffff:ffff")).toBe("2001:db8:1:2::/64");
    expect(addressBucket("::ffff:10.0.0.7")).toBe("10.0.0.7");
    expect(addressBucket("10.0.0.7")).toBe("10.0.0.7");
  });
});

describe("anonymous requests", () => {
  /** A raw HTTP/2 POST without a client certificate; resolves with the gRPC status and reset code. */
  function post(server: RpcServer, body: Buffer | undefined) {
    const session = http2.connect(server.grpcUrl, { ca: pki.rootPem, checkServerIdentity: () => undefined });
    session.on("error", () => {});
    const req = session.request({
      ":method": "POST",
      ":path": SIGN,
      "content-type": "application/grpc",
      te: "trailers",
    });
    let grpcStatus: string | undefined;
    req.on("response", (h) => (grpcStatus ??= h["grpc-status"] as string | undefined));
    req.on("trailers", (t) => (grpcStatus = t["grpc-status"] as string | undefined));
    req.on("error", () => {});
    req.resume();
    const done = new Promise<{ grpcStatus: string | undefined; rstCode: number }>((resolve) =>
      req.on("close", () => {
        session.close();
        resolve({ grpcStatus, rstCode: req.rstCode });
      }),
    );
    if (body) req.end(body);
    return { req, done };
  }

  it("cuts off a request body past maxAnonymousRequestBytes", async () => {
    const { server } = await startServer();
    const size = DEFAULT_LISTENER_LIMITS.maxAnonymousRequestBytes + 1;
    const envelope = Buffer.alloc(5 + size);
    envelope.writeUInt32BE(size, 1);
    const { done } = post(server, envelope);
    expect((await done).grpcStatus).toBe(String(Code.ResourceExhausted));
  });

  it("resets an anonymous stream whose request does not arrive within requestTimeoutMs", async () => {
    const { server, clock } = await startServer();
    const { req, done } = post(server, undefined);
    await waitFor(() => server.listenerStats().grpc.streams === 1);
    clock.advance(DEFAULT_LISTENER_LIMITS.requestTimeoutMs);
    expect((await done).rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(req.closed).toBe(true);
  });
});

describe("HTTP/1 on the mTLS port", () => {
  it("refuses request headers past maxHeaderBytes", async () => {
    // below Node's own 16 KiB default, so the limit seen is the listener's
    const { server } = await startServer({ maxHeaderBytes: 4_096 });
    const status = await new Promise<number | undefined>((resolve, reject) => {
      const req = https.request(
        `${server.grpcUrl}/grpc.health.v1.Health/Check`,
        {
          method: "POST",
          ca: pki.rootPem,
          checkServerIdentity: () => undefined,
          headers: { "content-type": "application/grpc-web+proto", "x-big": "x".repeat(8_000) },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode);
        },
      );
      req.on("error", reject);
      req.end();
    });
    expect(status).toBe(431);
  });
});

describe("the plain HTTP port", () => {
  it("limits connections per address, closes idle ones and refuses oversized headers", async () => {
    const { server, clock } = await startServer(
      {},
      { plainLimits: { maxConnectionsPerAddress: 2, maxHeaderBytes: 4_096 } },
    );
    const open = () => {
      const socket = net.connect(server.httpPort, "127.0.0.1");
      socket.on("error", () => {});
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
      return { socket, closed, connected: new Promise<void>((r) => socket.once("connect", () => r())) };
    };
    const a = open();
    await a.connected;
    const b = open();
    await b.connected;
    await waitFor(() => server.listenerStats().http.connections === 2);
    const c = open();
    await a.closed; // the longest-idle one made room
    await waitFor(() => server.listenerStats().http.connections === 2);

    const res = await fetch(`${server.httpUrl}/healthz`, { headers: { "x-big": "x".repeat(8_000) } });
    expect(res.status).toBe(431);

    clock.advance(DEFAULT_LISTENER_LIMITS.anonymousIdleTimeoutMs);
    await Promise.all([b.closed, c.closed]);
  });
});

/** Waits for a server-side condition the test cannot be told of by an event. */
async function waitFor(test: () => boolean): Promise<void> {
  while (!test()) await new Promise((resolve) => setImmediate(resolve));
}
