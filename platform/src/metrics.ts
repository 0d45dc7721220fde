import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** A process's Prometheus registry, served at /metrics on the plain HTTP port. */
export function createMetricsRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry });
  return registry;
}

function codeName(err: unknown): string {
  const code = err instanceof ConnectError ? err.code : Code.Unknown;
  return Code[code] ?? "Unknown";
}

/** RPC count and latency by method and result code; streams are measured until they end. */
export function rpcMetricsInterceptor(registry: Registry): Interceptor {
  const requests = new Counter({
    name: "fabric_rpc_requests_total",
    help: "RPCs handled, by method and gRPC code.",
    labelNames: ["method", "code"],
    registers: [registry],
  });
  const duration = new Histogram({
    name: "fabric_rpc_duration_seconds",
    help: "RPC handling time (whole stream for streaming RPCs), by method and gRPC code.",
    labelNames: ["method", "code"],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300],
    registers: [registry],
  });
  return (next) => async (req) => {
    const method = `${req.service.typeName}/${req.method.name}`;
    const start = process.hrtime.bigint();
    const done = (code: string) => {
      requests.inc({ method, code });
      duration.observe({ method, code }, Number(process.hrtime.bigint() - start) / 1e9);
    };
    let res;
    try {
      res = await next(req);
    } catch (err) {
      done(codeName(err));
      throw err;
    }
    if (!res.stream) {
      done("OK");
      return res;
    }
    const messages = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          yield* messages;
          done("OK");
        } catch (err) {
          done(codeName(err));
          throw err;
        }
      })(),
    };
  };
}
