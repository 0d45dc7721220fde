import { Code } from "@connectrpc/connect";
import type { AuthorizationRefusal } from "./authorization.js";
import type { Pool } from "./database.js";
import type { Logger } from "./logger.js";
import { refusalAuditorFor } from "./refusal-auditor.js";

/**
 * Records each call the authorization table refused in the service's audit log, through the service's
 * one refusal auditor (refusal-auditor.ts): the refusal goes back to the caller at once, and a flood of
 * them neither takes the service's database connections nor goes unaccounted.
 */
export function auditRefusals(pool: Pool, logger: Logger): (refusal: AuthorizationRefusal) => void {
  const auditor = refusalAuditorFor(pool, logger);
  return (refusal) => {
    const p = refusal.principal;
    auditor.record({
      actorId: p?.id ?? "anonymous",
      actorKind: p?.kind ?? "anonymous",
      action: "rpc.authorize",
      targetType: "rpc",
      targetId: refusal.rpc,
      clusterId: p?.cluster ?? "",
      orgId: p?.organization ?? "",
      details: { code: Code[refusal.code], reason: refusal.reason, address: refusal.address },
    });
  };
}
