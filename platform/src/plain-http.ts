import http from "node:http";
import type { Registry } from "prom-client";

export type PlainRoute = (req: http.IncomingMessage, res: http.ServerResponse) => void | Promise<void>;

export interface PlainHttpOptions {
  host: string;
  port: number;
  metrics: Registry;
  isReady: () => boolean;
  /** Extra routes by path, e.g. the CA's /crl and /ocsp. */
  routes?: Record<string, PlainRoute>;
}

/** The plain (non-TLS) HTTP listener: liveness, readiness, Prometheus metrics and service routes. */
export function createPlainHttpServer(options: PlainHttpOptions): http.Server {
  return http.createServer((req, res) => {
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
  });
}
