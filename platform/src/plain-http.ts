import http from "node:http";
import type { Registry } from "prom-client";
import { systemClock, type Clock } from "./clock.js";
import {
  applyHttp1Limits,
  ConnectionLimiter,
  DEFAULT_PLAIN_LISTENER_LIMITS,
  type ListenerLimits,
  type ListenerRefusal,
} from "./listener-limits.js";

export type PlainRoute = (req: http.IncomingMessage, res: http.ServerResponse) => void | Promise<void>;

export interface PlainHttpOptions {
  host: string;
  port: number;
  metrics: Registry;
  isReady: () => boolean;
  /** Extra routes by path, e.g. the CA's /crl and /ocsp. */
  routes?: Record<string, PlainRoute>;
  /** Default DEFAULT_PLAIN_LISTENER_LIMITS: every connection here is anonymous. */
  limits?: ListenerLimits;
  clock?: Clock;
  onRefused?: (reason: ListenerRefusal) => void;
}

export interface PlainHttpServer extends http.Server {
  limiter: ConnectionLimiter;
}

/**
 * The plain (non-TLS) HTTP listener: liveness, readiness, Prometheus metrics and service routes. Anyone
 * who can reach the port can use it, so connections per address, idle time, header size and request time
 * are limited.
 */
export function createPlainHttpServer(options: PlainHttpOptions): PlainHttpServer {
  const limits = options.limits ?? DEFAULT_PLAIN_LISTENER_LIMITS;
  const limiter = new ConnectionLimiter(limits, options.clock ?? systemClock, options.onRefused);
  const server = http.createServer(limiter.wrap(plainRoutes(options)));
  applyHttp1Limits(server, limits);
  server.on("connection", (socket) => limiter.accept(socket, "anonymous"));
  return Object.assign(server, { limiter });
}

function plainRoutes(options: PlainHttpOptions): http.RequestListener {
  return (req, res) => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    const route = options.routes?.[path];
    const reply = (status: number, body: string, type = "text/plain; charset=utf-8") => {
      res.writeHead(status, { "content-type": type }).end(body);
    };
    if (route) {
      Promise.resolve(route(req, res)).catch(() => {
        if (!res.headersSent) reply(500, "internal error\n");
        else res.destroy();
      });
      return;
    }
    switch (path) {
      case "/healthz":
        return reply(200, "ok\n");
      case "/readyz":
        return options.isReady() ? reply(200, "ready\n") : reply(503, "not ready\n");
      case "/metrics":
        options.metrics
          .metrics()
          .then((text) => reply(200, text, options.metrics.contentType))
          .catch(() => reply(500, "metrics unavailable\n"));
        return;
      default:
        return reply(404, "not found\n");
    }
  };
}
