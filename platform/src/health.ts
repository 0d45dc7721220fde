import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import {
  Health,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "@fabric/proto/grpc/health/v1/health_pb.js";
import type { PolicyBinding } from "./authorization.js";

type Status = "SERVING" | "NOT_SERVING";

/**
 * Serving status per service name for standard gRPC health checking. "" is the whole server. Everything
 * starts NOT_SERVING until the process declares itself ready.
 */
export class HealthState {
  private readonly statuses = new Map<string, Status>();
  private readonly listeners = new Set<() => void>();

  constructor(serviceNames: string[]) {
    for (const name of ["", ...serviceNames]) this.statuses.set(name, "NOT_SERVING");
  }

  get(service: string): Status | undefined {
    return this.statuses.get(service);
  }

  setAll(status: Status): void {
    for (const name of this.statuses.keys()) this.statuses.set(name, status);
    for (const notify of this.listeners) notify();
  }

  names(): string[] {
    return [...this.statuses.keys()];
  }

  /** Resolves at the next status change or when the signal aborts. */
  changed(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.listeners.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      this.listeners.add(done);
      signal.addEventListener("abort", done);
    });
  }
}

const toProto = (s: Status | undefined) =>
  s === undefined
    ? ServingStatus.SERVICE_UNKNOWN
    : s === "SERVING"
      ? ServingStatus.SERVING
      : ServingStatus.NOT_SERVING;

/**
 * Check and List answer at once, so they stay open to any caller that passed TLS (probes and load
 * balancers). Watch holds a stream open for as long as the caller likes: anonymous callers could pile
 * them up by the thousand on a port with optional client certificates, so it needs an enrolled identity.
 */
export const HEALTH_POLICY: PolicyBinding = {
  service: Health,
  policy: { check: { anonymous: true }, watch: { authenticated: true }, list: { anonymous: true } },
};

export function registerHealthService(router: ConnectRouter, state: HealthState): void {
  router.service(Health, {
    check(req) {
      const status = state.get(req.service);
      if (status === undefined) throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound);
      return create(HealthCheckResponseSchema, { status: toProto(status) });
    },
    async *watch(req, ctx: HandlerContext) {
      let last: ServingStatus | undefined;
      while (!ctx.signal.aborted) {
        const status = toProto(state.get(req.service));
        if (status !== last) yield create(HealthCheckResponseSchema, { status });
        last = status;
        await state.changed(ctx.signal);
      }
    },
  });
}
