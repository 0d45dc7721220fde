import { Code } from "@connectrpc/connect";
import {
  FabricError,
  alreadyExists,
  notFound,
  recordAudit,
  toConnectError,
  transaction,
  unavailable,
  type AuditInput,
  type Principal,
  type Tx,
} from "@fabric/platform";
import { ChangeSet, writeChanges } from "./changes.js";
import type { Registry } from "./context.js";
import type { EntityKind, EntityTypes } from "./entities.js";
import { LOADERS } from "./loaders.js";

/** What a mutation is about, for its audit events (success and refusal alike). */
export interface Mutation {
  caller: Principal;
  action: string;
  targetType: string;
  targetId?: string;
  clusterId?: string;
  orgId?: string;
}

/** A mutation's transaction: its SQL, the entities it changed, and its audit events. */
export interface Write {
  tx: Tx;
  changes: ChangeSet;
  /** Records a success event; fields not given come from the mutation. */
  audit(event?: Partial<Omit<AuditInput, "actorId" | "actorKind" | "outcome">>): void;
}

// How long a writer waits for its own change to reach the model, so its next read sees it.
const READ_YOUR_WRITES_MS = 2_000;

/**
 * The one way the registry changes its state: `fn` runs in a transaction, the entities it touched are
 * captured in the change feed, and its audit events commit with it. After commit the call waits until
 * the model has applied the change, so the caller's next read sees its own write. A refusal (bad input,
 * wrong state, wrong scope) is audited on its own and rethrown; a database that cannot take writes
 * becomes Unavailable with a message saying reads keep working.
 */
export async function mutate<T>(r: Registry, m: Mutation, fn: (w: Write) => Promise<T>): Promise<T> {
  const changes = new ChangeSet();
  let version: bigint | undefined;
  try {
    const result = await transaction(r.pool, async (tx) => {
      const out = await fn({
        tx,
        changes,
        audit: (event = {}) => {
          const b = base(m);
          tx.audit({ ...b, ...event, details: { ...b.details, ...event.details }, outcome: "success" });
        },
      });
      version = await writeChanges(tx, changes);
      return out;
    });
    if (version !== undefined) await r.model.waitFor(version, READ_YOUR_WRITES_MS);
    return result;
  } catch (err) {
    throw await refusal(r, m, err);
  }
}

function base(m: Mutation): Omit<AuditInput, "outcome"> {
  const event: Omit<AuditInput, "outcome"> = {
    actorId: m.caller.id,
    actorKind: m.caller.kind,
    action: m.action,
    targetType: m.targetType,
  };
  if (m.targetId) event.targetId = m.targetId;
  if (m.clusterId) event.clusterId = m.clusterId;
  if (m.orgId) event.orgId = m.orgId;
  if (m.caller.adminRole) event.details = { admin_role: m.caller.adminRole };
  return event;
}

// pg reports a lost or unobtainable connection with these messages and no SQLSTATE.
const CONNECTION_LOST = /Connection terminated|timeout exceeded when trying to connect|not queryable/i;

async function refusal(r: Registry, m: Mutation, err: unknown): Promise<unknown> {
  if ((err as { code?: string }).code === "23505") err = alreadyExists(`the ${m.targetType} already exists`);
  if (err instanceof FabricError && err.kind !== "unavailable" && err.kind !== "internal") {
    const event = base(m);
    await recordAudit(r.pool, {
      ...event,
      outcome: err.kind === "permission-denied" ? "refused" : "failed",
      details: { ...event.details, error: err.kind, reason: err.message },
    }).catch((auditErr: unknown) =>
      r.logger.warn(
        { err: (auditErr as Error).message, action: m.action },
        "could not audit a refused change",
      ),
    );
    return err;
  }
  const mapped = toConnectError(err);
  const lost = err instanceof Error && !(err instanceof FabricError) && CONNECTION_LOST.test(err.message);
  if (mapped.code === Code.Unavailable || lost) {
    const cause =
      (err as { code?: string }).code === "25006"
        ? "its database is read-only: a replica, or writes are switched off"
        : "its database is unreachable";
    return unavailable(
      `the registry cannot take changes now (${cause}); nothing was changed. Reads and watches keep serving the last known state; retry the change against the primary later`,
    );
  }
  return err;
}

/** An entity as a mutation left it: from the model, or from the database if the model lags. */
export async function written<K extends EntityKind>(
  r: Registry,
  kind: K,
  key: string,
): Promise<EntityTypes[K]> {
  const entity = r.model.get(kind, key) ?? (await LOADERS[kind](r.pool, [key]))[0];
  if (!entity) throw notFound(`${kind.replace("_", " ")} "${key}" does not exist`);
  return entity;
}
