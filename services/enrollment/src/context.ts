import { Code, type Client } from "@connectrpc/connect";
import {
  permissionDenied,
  recordAudit,
  toConnectError,
  isClientError,
  type AuditInput,
  type Logger,
  type Pool,
  type Principal,
} from "@fabric/platform";
import type { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import type { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import type { JoinRequestEvents } from "./join-request-events.js";
import type { AnonymousLimits } from "./rate-limits.js";
import type { EnrollmentConfig } from "./service.js";

/** What every enrollment module works with. */
export interface Enrollment {
  pool: Pool;
  config: EnrollmentConfig;
  logger: Logger;
  ca: Client<typeof CaService>;
  registry: Client<typeof RegistryService>;
  events: JoinRequestEvents;
  limits: AnonymousLimits;
}

/** Who did something, as recorded on rows and in audit. */
export interface Actor {
  kind: string;
  id: string;
}

export const ANONYMOUS: Actor = { kind: "anonymous", id: "anonymous" };
/** The actor of automatic decisions (auto-approval, expiry, reconciliation). */
export const ENROLLMENT_SERVICE: Actor = { kind: "service", id: "enrollment" };

export function actorOf(principal: Principal): Actor {
  return { kind: principal.kind, id: principal.id };
}

const KINDS: Record<string, PrincipalKind> = {
  node: PrincipalKind.NODE,
  service: PrincipalKind.SERVICE,
  user: PrincipalKind.USER,
  admin: PrincipalKind.ADMIN,
};

export function principalKindOf(kind: string): PrincipalKind {
  return KINDS[kind] ?? PrincipalKind.UNSPECIFIED;
}

/**
 * The cluster an admin may act on: undefined for a platform-admin (any cluster), the certificate's
 * cluster for a cluster-admin. The authorization table has already admitted only these two roles.
 */
export function clusterScopeOf(principal: Principal): string | undefined {
  if (principal.adminRole === "platform-admin") return undefined;
  if (!principal.cluster) {
    throw permissionDenied(
      `cluster-admin "${principal.id}" has no cluster in its certificate; ask a platform-admin to reissue it`,
    );
  }
  return principal.cluster;
}

export function requireClusterAccess(principal: Principal, clusterId: string): void {
  const scope = clusterScopeOf(principal);
  if (scope !== undefined && scope !== clusterId) {
    throw permissionDenied(
      `cluster-admin "${principal.id}" administers cluster "${scope}", not "${clusterId}"; ask a platform-admin`,
    );
  }
}

// Refusals whose audit event was already committed with the change they caused (a counted wrong PIN).
const audited = new WeakSet<Error>();

export function markAudited<E extends Error>(err: E): E {
  audited.add(err);
  return err;
}

/**
 * Runs `fn` and, when it refuses (a caller-caused error), records the refused attempt in audit with the
 * code and message before passing the refusal on. Successful mutations audit inside their transaction.
 * Messages never carry secrets, so they are safe to record.
 */
export async function auditRefusal<T>(
  deps: Pick<Enrollment, "pool" | "logger">,
  event: Omit<AuditInput, "outcome">,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const mapped = toConnectError(err);
    if (isClientError(mapped) && !(err instanceof Error && audited.has(err))) {
      await recordAudit(deps.pool, {
        ...event,
        outcome: "refused",
        details: { ...event.details, code: Code[mapped.code], reason: mapped.rawMessage },
      }).catch((auditErr: unknown) =>
        deps.logger.error({ err: auditErr, action: event.action }, "could not audit a refused attempt"),
      );
    }
    throw err;
  }
}
