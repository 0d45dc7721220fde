import { Code } from "@connectrpc/connect";
import type { AuthorizationRefusal } from "./authorization.js";
import type { Pool } from "./database.js";
import type { Logger } from "./logger.js";
import { recordAudit } from "./transactions.js";

// Audit writes for refusals run beside the call (the refusal is not held up by the database). Past this
// many in flight, e.g. a flood of refused calls while Postgres is slow, further ones are only logged, so a
// caller cannot make refusals pile up in memory.
const MAX_IN_FLIGHT = 256;

/** Records each call the authorization table refused in the service's audit log. */
export function auditRefusals(pool: Pool, logger: Logger): (refusal: AuthorizationRefusal) => void {
  let inFlight = 0;
  return (refusal) => {
    const p = refusal.principal;
    const event = {
      actorId: p?.id ?? "anonymous",
      actorKind: p?.kind ?? "anonymous",
      action: "rpc.authorize",
      targetType: "rpc",
      targetId: refusal.rpc,
      clusterId: p?.cluster ?? "",
      orgId: p?.organization ?? "",
      outcome: "refused" as const,
      details: { code: Code[refusal.code], reason: refusal.reason, address: refusal.address },
    };
    if (inFlight >= MAX_IN_FLIGHT) {
      logger.warn({ ...event, details: undefined }, "refusal not audited: too many audit writes in flight");
      return;
    }
    inFlight += 1;
    recordAudit(pool, event)
      .catch((err: unknown) =>
        logger.warn({ err: (err as Error).message, rpc: refusal.rpc }, "refusal not audited"),
      )
      .finally(() => (inFlight -= 1));
  };
}
