import {
  ConfigError,
  refusalAuditorFor,
  serve,
  type ServiceContext,
  type ServiceParts,
} from "@fabric/platform";
import { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { reconcileApprovals } from "./approvals.js";
import { ANONYMOUS, type Enrollment } from "./context.js";
import { enrollmentHandlers, type PublicEndpoints } from "./enrollment-service.js";
import { JoinRequestEvents } from "./join-request-events.js";
import { expireJoinRequests } from "./join-requests.js";
import { deleteExpiredJoinTokens } from "./join-tokens.js";
import { every } from "./jobs.js";
import { policy } from "./policy.js";
import { AnonymousLimits } from "./rate-limits.js";
import type { EnrollmentConfig } from "./service.js";

const RATE_LIMIT_AUDIT_INTERVAL_MS = 10_000;

/** Wires enrollment: clients to the CA and registry, the RPC handlers, and the background jobs. */
export function buildEnrollment(ctx: ServiceContext<EnrollmentConfig>): ServiceParts {
  const { config } = ctx;
  const caUrl = config.caUrl;
  if (!caUrl)
    throw new ConfigError(["FABRIC_CA_URL: required: enrollment signs every identity through the CA"]);
  const deps: Enrollment = {
    pool: ctx.pool,
    config,
    logger: ctx.logger,
    ca: ctx.client(CaService, caUrl, "ca"),
    registry: ctx.client(RegistryService, config.registryUrl, "registry"),
    events: new JoinRequestEvents(),
    limits: new AnonymousLimits(config),
  };
  let ownUrl = config.publicEnrollmentUrl ?? "";
  const endpoints = (): PublicEndpoints => ({
    ca: config.publicCaUrl ?? caUrl,
    enrollment: ownUrl,
    registry: config.publicRegistryUrl ?? config.registryUrl,
    router: config.publicRouterUrl ?? config.routerUrl ?? "",
  });
  const jobs: Promise<void>[] = [];

  return {
    services: [serve(EnrollmentService, { ...enrollmentHandlers(deps, endpoints), ...ctx.audit }, policy)],
    start(server) {
      ownUrl ||= server.grpcUrl;
      const { signal, logger } = ctx;
      jobs.push(
        every("reconcile-approvals", config.reconcileIntervalMs, signal, logger, () =>
          reconcileApprovals(deps),
        ),
        every("expire-and-clean-up", config.cleanupIntervalMs, signal, logger, async () => {
          await expireJoinRequests(deps);
          await deleteExpiredJoinTokens(deps);
          deps.limits.prune();
        }),
        every("audit-rate-limits", RATE_LIMIT_AUDIT_INTERVAL_MS, signal, logger, () => auditRateLimits(deps)),
      );
    },
    async stop() {
      await Promise.all(jobs);
      await auditRateLimits(deps);
    },
  };
}

/** One audit event per rate-limited key since the last flush, with how many calls were refused. */
async function auditRateLimits(deps: Enrollment): Promise<void> {
  // Through the service's one refusal auditor, so a flood of limited callers never takes the pool.
  const auditor = refusalAuditorFor(deps.pool, deps.logger);
  for (const tally of deps.limits.drainRefusals()) {
    auditor.record({
      actorId: ANONYMOUS.id,
      actorKind: ANONYMOUS.kind,
      action: "rate_limit.refuse",
      targetType: tally.limitedBy,
      targetId: tally.key,
      details: { rpc: tally.action, refused: String(tally.count), code: "ResourceExhausted" },
    });
  }
}
