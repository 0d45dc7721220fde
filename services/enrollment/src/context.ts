import { Code, type Client } from "@connectrpc/connect";
import {
  refusalAuditorFor,
  toConnectError,
  isClientError,
  type Actor,
  type AuditInput,
  type Logger,
  type Pool,
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

export const ANONYMOUS: Actor = { kind: "anonymous", id: "anonymous" };
/** The actor of automatic decisions (auto-approval, expiry, reconciliation). */
export const ENROLLMENT_SERVICE: Actor = { kind: "service", id: "enrollment" };

const KINDS: Record<string, PrincipalKind> = {
  node: PrincipalKind.NODE,
  service: PrincipalKind.SERVICE,
  user: PrincipalKind.USER,
  admin: PrincipalKind.ADMIN,
};

export function principalKindOf(kind: string): PrincipalKind {
  return KINDS[kind] ?? PrincipalKind.UNSPECIFIED;
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
      // The service's one refusal auditor writes it on a connection of its own, batched, and folds a
      // flood of identical refusals into counted events, so refused callers cannot drain the pool. The
      // wait (bounded, none when flooded) lets a caller who saw the refusal find it in the audit log.
      await refusalAuditorFor(deps.pool, deps.logger).recordAndWait({
        ...event,
        details: { ...event.details, code: Code[mapped.code], reason: mapped.rawMessage },
      });
    }
    throw err;
  }
}
