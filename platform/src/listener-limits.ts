import http2 from "node:http2";
import type { IncomingMessage, ServerResponse } from "node:http";
import { isIPv6, type Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { Code, ConnectError } from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import type { Clock, ClockTimer } from "./clock.js";
import { kPeer } from "./principal.js";

/**
 * What one listener lets a client hold. Connections are counted per source address (IPv6 per /64, the
 * block one host usually holds). A connection without a verified client certificate ("anonymous": on a
 * port with optional client certificates, or on the plain HTTP port) answers to nobody, so it is held to
 * stricter limits than an authenticated one; a connection still in its TLS handshake is not known to be
 * either, and is limited by the handshake limits.
 */
export interface ListenerLimits {
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: streams one connection may have open at once. */
  maxConcurrentStreams: number;
  /** HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE and HTTP/1 maxHeaderSize: bytes of one request's headers. */
  maxHeaderBytes: number;
  /** nghttp2's memory per HTTP/2 connection in MB (maxSessionMemory); past it new streams are refused. */
  maxSessionMemoryMb: number;
  /** A TLS handshake not finished by then is dropped. */
  handshakeTimeoutMs: number;
  /** HTTP/1: a request's headers must arrive within this (Node checks every second). */
  headersTimeoutMs: number;
  /** HTTP/1: a whole request must arrive within this; HTTP/2: an anonymous request's body likewise. */
  requestTimeoutMs: number;
  /** A connection with a client certificate and no open stream or request is closed after this. */
  idleTimeoutMs: number;
  /** An anonymous connection with no open stream or request is closed after this. */
  anonymousIdleTimeoutMs: number;
  /** Connections from one address, of any kind, handshakes included. */
  maxConnectionsPerAddress: number;
  /** TLS handshakes in progress from one address. */
  maxHandshakesPerAddress: number;
  /** Anonymous connections from one address. */
  maxAnonymousConnectionsPerAddress: number;
  /** Streams (HTTP/1: requests) open at once on the anonymous connections of one address. */
  maxAnonymousStreamsPerAddress: number;
  /** Largest request body an anonymous caller may send (Join, BootstrapDeveloper are a few KiB). */
  maxAnonymousRequestBytes: number;
}

/**
 * Defaults for the mTLS gRPC port. Sized for a thousand agents behind one NAT address holding a stream
 * each, for a burst of a hundred hosts enrolling from one address at once (each its own connection and
 * handshake), and for agents reconnecting together (the fan-out bench opens 128 at once). A test with
 * thousands of agents on 127.0.0.1 raises maxConnectionsPerAddress, and for its reconnect storm
 * maxHandshakesPerAddress.
 */
export const DEFAULT_LISTENER_LIMITS: ListenerLimits = {
  maxConcurrentStreams: 100,
  maxHeaderBytes: 16 * 1024,
  maxSessionMemoryMb: 10,
  handshakeTimeoutMs: 10_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  idleTimeoutMs: 300_000,
  anonymousIdleTimeoutMs: 30_000,
  maxConnectionsPerAddress: 1_024,
  maxHandshakesPerAddress: 256,
  maxAnonymousConnectionsPerAddress: 128,
  maxAnonymousStreamsPerAddress: 256,
  maxAnonymousRequestBytes: 64 * 1024,
};

/**
 * Defaults for the plain HTTP port (/healthz, /readyz, /metrics, /crl, /ocsp): every connection there is
 * anonymous, and probes and scrapers need only a few.
 */
export const DEFAULT_PLAIN_LISTENER_LIMITS: ListenerLimits = {
  ...DEFAULT_LISTENER_LIMITS,
  maxConnectionsPerAddress: 64,
  maxAnonymousConnectionsPerAddress: 64,
  maxAnonymousStreamsPerAddress: 64,
};

/** The http2.createSecureServer options that carry the limits nghttp2 and TLS enforce themselves. */
export function http2LimitOptions(limits: ListenerLimits): http2.SecureServerOptions {
  return {
    settings: { maxConcurrentStreams: limits.maxConcurrentStreams, maxHeaderListSize: limits.maxHeaderBytes },
    maxSessionMemory: limits.maxSessionMemoryMb,
    handshakeTimeout: limits.handshakeTimeoutMs,
  };
}

interface Http1Settings {
  maxHeaderSize?: number;
  headersTimeout?: number;
  requestTimeout?: number;
  connectionsCheckingInterval?: number;
}

/**
 * Node's HTTP/1 limits, set on a server object before it listens: an http.Server, or an HTTP/2 server
 * with allowHTTP1, whose HTTP/1 connections Node's HTTP/1 code serves with these same properties
 * (http2.Http2SecureServer's types do not declare them).
 */
export function applyHttp1Limits(target: object, limits: ListenerLimits): void {
  const server = target as Http1Settings;
  server.maxHeaderSize = limits.maxHeaderBytes;
  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = limits.requestTimeoutMs;
  // How often Node looks for HTTP/1 requests past those timeouts (30 s by default, so up to 30 s late).
  server.connectionsCheckingInterval = 1_000;
}

type ConnectionState = "handshake" | "anonymous" | "authenticated";

interface Connection {
  key: string;
  address: string;
  state: ConnectionState;
  /** Open streams (HTTP/2) or requests (HTTP/1). */
  busy: number;
  idleSince: number;
  idleTimer: ClockTimer | undefined;
  released: boolean;
  /** Ends the connection: GOAWAY for HTTP/2 (nothing is in flight when this is called), else destroy. */
  close(): void;
}

interface AddressLoad {
  connections: Set<Connection>;
  anonymousStreams: number;
}

export type ListenerRefusal =
  | "connections-per-address"
  | "handshakes-per-address"
  | "anonymous-connections-per-address"
  | "anonymous-streams-per-address"
  | "anonymous-request-timeout";

export interface ListenerStats {
  connections: number;
  /** Of those, still in their TLS handshake. */
  handshakes: number;
  /** Of those, without a verified client certificate. */
  anonymousConnections: number;
  /** Open streams and requests. */
  streams: number;
}

/** The bucket a source address counts in: the IPv4 address, or the /64 of an IPv6 one. */
export function addressBucket(ip: string): string {
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (v4) return v4[1]!;
  if (!isIPv6(ip)) return ip;
  const [head = "", tail = ""] = ip.split("::");
  const left = head ? head.split(":") : [];
  const right = ip.includes("::") && tail ? tail.split(":") : [];
  const groups = ip.includes("::")
    ? [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(":")}::/64`;
}

const connectionKey = (socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }) =>
  `${socket.remoteAddress ?? ""}|${socket.remotePort ?? 0}`;

const isAnonymous = (c: Connection) => c.state === "anonymous";
const inHandshake = (c: Connection) => c.state === "handshake";

/**
 * Counts a listener's connections per source address and what they hold, refuses what goes past the
 * limits, and closes connections that sit idle. When an address is at a connection limit, its
 * longest-idle connection of that kind is closed to make room before the new one is refused: an idle
 * connection costs memory and serves nobody.
 */
export class ConnectionLimiter {
  private readonly connections = new Map<string, Connection>();
  private readonly addresses = new Map<string, AddressLoad>();
  private streams = 0;

  constructor(
    private readonly limits: ListenerLimits,
    private readonly clock: Clock,
    private readonly onRefused: (reason: ListenerRefusal) => void = () => {},
  ) {}

  stats(): ListenerStats {
    let anonymous = 0;
    let handshakes = 0;
    for (const c of this.connections.values()) {
      if (isAnonymous(c)) anonymous += 1;
      else if (inHandshake(c)) handshakes += 1;
    }
    return {
      connections: this.connections.size,
      handshakes,
      anonymousConnections: anonymous,
      streams: this.streams,
    };
  }

  /**
   * A new TCP connection ("connection" event): in its "handshake" until TLS says who it is, or
   * "anonymous" on a plain listener. Destroyed when its address is at a limit with nothing idle to close.
   */
  accept(socket: Socket, state: "handshake" | "anonymous"): void {
    if (!socket.remoteAddress) return void socket.destroy();
    const address = addressBucket(socket.remoteAddress);
    const load = this.addresses.get(address) ?? { connections: new Set(), anonymousStreams: 0 };
    this.addresses.set(address, load);
    const admitted =
      this.makeRoom(load, "connections-per-address", () => true, this.limits.maxConnectionsPerAddress) &&
      (state === "handshake"
        ? this.makeRoom(load, "handshakes-per-address", inHandshake, this.limits.maxHandshakesPerAddress)
        : this.makeRoom(
            load,
            "anonymous-connections-per-address",
            isAnonymous,
            this.limits.maxAnonymousConnectionsPerAddress,
          ));
    if (!admitted) {
      this.forgetIfUnused(address, load);
      return void socket.destroy();
    }
    const connection: Connection = {
      key: connectionKey(socket),
      address,
      state,
      busy: 0,
      idleSince: this.clock.now(),
      idleTimer: undefined,
      released: false,
      close: () => socket.destroy(),
    };
    this.connections.set(connection.key, connection);
    load.connections.add(connection);
    socket.once("close", () => this.release(connection));
    if (state === "anonymous") this.armIdle(connection);
  }

  /**
   * The TLS handshake finished ("secureConnection"): a verified client certificate makes the connection
   * authenticated, anything else anonymous, which must fit under the address's anonymous limit.
   */
  secured(socket: TLSSocket): void {
    const connection = this.connections.get(connectionKey(socket));
    if (!connection || connection.state !== "handshake") return;
    if (socket.authorized && socket.getPeerCertificate()?.raw) connection.state = "authenticated";
    else {
      const load = this.addresses.get(connection.address)!;
      const limit = this.limits.maxAnonymousConnectionsPerAddress;
      if (!this.makeRoom(load, "anonymous-connections-per-address", isAnonymous, limit)) {
        this.release(connection);
        return void socket.destroy();
      }
      connection.state = "anonymous";
    }
    connection.idleSince = this.clock.now();
    this.armIdle(connection);
  }

  /** An HTTP/2 connection is closed with GOAWAY. */
  session(session: http2.ServerHttp2Session): void {
    const connection = this.connections.get(connectionKey(session.socket));
    if (connection) connection.close = () => session.close();
  }

  /**
   * Wraps the request listener: counts the request against its connection (no longer idle) and, on an
   * anonymous connection, against its address's stream limit and the request timeout.
   */
  wrap<
    Req extends IncomingMessage | http2.Http2ServerRequest,
    Res extends ServerResponse | http2.Http2ServerResponse,
  >(handler: (req: Req, res: Res) => void): (req: Req, res: Res) => void {
    return (req, res) => {
      const stream = (req as http2.Http2ServerRequest).stream as http2.ServerHttp2Stream | undefined;
      const connection = this.connections.get(connectionKey(stream?.session?.socket ?? req.socket));
      const refuse = () => {
        // HTTP/2: REFUSED_STREAM tells the client nothing was processed, so it may try again.
        if (stream) stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        else req.socket.destroy();
      };
      // A connection no longer counted is being closed; nothing new starts on it.
      if (!connection || connection.released) return refuse();
      const load = this.addresses.get(connection.address)!;
      const anonymous = isAnonymous(connection);
      if (anonymous && load.anonymousStreams >= this.limits.maxAnonymousStreamsPerAddress) {
        this.onRefused("anonymous-streams-per-address");
        return refuse();
      }
      connection.busy += 1;
      this.streams += 1;
      if (anonymous) load.anonymousStreams += 1;
      if (connection.idleTimer) {
        this.clock.clearTimeout(connection.idleTimer);
        connection.idleTimer = undefined;
      }
      let requestTimer: ClockTimer | undefined;
      if (anonymous && stream) {
        // HTTP/1 has Node's requestTimeout; an HTTP/2 stream whose request never finishes would
        // otherwise be held for as long as the caller likes.
        const timer = this.clock.setTimeout(() => {
          this.onRefused("anonymous-request-timeout");
          stream.close(http2.constants.NGHTTP2_CANCEL);
        }, this.limits.requestTimeoutMs);
        requestTimer = timer;
        req.once("end", () => this.clock.clearTimeout(timer));
      }
      res.once("close", () => {
        if (requestTimer) this.clock.clearTimeout(requestTimer);
        this.streams -= 1;
        if (anonymous) load.anonymousStreams -= 1;
        connection.busy -= 1;
        if (connection.released) this.forgetIfUnused(connection.address, load);
        else if (connection.busy === 0) {
          connection.idleSince = this.clock.now();
          this.armIdle(connection);
        }
      });
      handler(req, res);
    };
  }

  /**
   * Whether the address may hold one more connection of the kind `counts` selects, closing its
   * longest-idle such connection if that makes room.
   */
  private makeRoom(
    load: AddressLoad,
    reason: ListenerRefusal,
    counts: (c: Connection) => boolean,
    limit: number,
  ): boolean {
    let held = 0;
    let idlest: Connection | undefined;
    for (const c of load.connections) {
      if (!counts(c)) continue;
      held += 1;
      if (c.busy === 0 && c.state !== "handshake" && (!idlest || c.idleSince < idlest.idleSince)) idlest = c;
    }
    if (held < limit) return true;
    if (held === limit && idlest) {
      this.release(idlest);
      idlest.close();
      return true;
    }
    this.onRefused(reason);
    return false;
  }

  private armIdle(connection: Connection): void {
    if (connection.idleTimer) this.clock.clearTimeout(connection.idleTimer);
    const ms = isAnonymous(connection) ? this.limits.anonymousIdleTimeoutMs : this.limits.idleTimeoutMs;
    connection.idleTimer = this.clock.setTimeout(() => {
      connection.idleTimer = undefined;
      if (connection.busy === 0) connection.close();
    }, ms);
  }

  /** Stops counting a connection (closed, or being closed to make room). */
  private release(connection: Connection): void {
    if (connection.released) return;
    connection.released = true;
    if (connection.idleTimer) this.clock.clearTimeout(connection.idleTimer);
    if (this.connections.get(connection.key) === connection) this.connections.delete(connection.key);
    const load = this.addresses.get(connection.address);
    if (!load) return;
    load.connections.delete(connection);
    this.forgetIfUnused(connection.address, load);
  }

  private forgetIfUnused(address: string, load: AddressLoad): void {
    if (load.connections.size === 0 && load.anonymousStreams === 0 && this.addresses.get(address) === load) {
      this.addresses.delete(address);
    }
  }
}

/**
 * Wraps a connect handler so an anonymous caller's request body is cut off past `maxBytes` with
 * ResourceExhausted, before connect buffers it (up to READ_MAX_BYTES, 4 MiB, per message otherwise).
 */
export function limitAnonymousRequests(handler: UniversalHandler, maxBytes: number): UniversalHandler {
  const wrapped: UniversalHandler = Object.assign(async (req: Parameters<UniversalHandler>[0]) => {
    const peer = req.contextValues?.get(kPeer);
    if (peer?.state === "verified" || !(Symbol.asyncIterator in Object(req.body))) return handler(req);
    const body = req.body as AsyncIterable<Uint8Array>;
    return handler({
      ...req,
      body: (async function* () {
        let total = 0;
        for await (const chunk of body) {
          total += chunk.byteLength;
          if (total > maxBytes) {
            throw new ConnectError(
              `a request without a client certificate may carry at most ${maxBytes} bytes`,
              Code.ResourceExhausted,
            );
          }
          yield chunk;
        }
      })(),
    });
  }, handler);
  return wrapped;
}
