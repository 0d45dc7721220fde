import { appendAudit, type AuditInput } from "./audit.js";
import type { Pool, PoolClient } from "./database.js";

/** A transaction that carries its audit events: they are written just before COMMIT, or not at all. */
export interface Tx {
  client: PoolClient;
  query: PoolClient["query"];
  audit(event: AuditInput): void;
  /** Runs after a successful commit (e.g. to wake watchers); never inside the transaction. */
  afterCommit(fn: () => void): void;
}

/**
 * The one way services change state: fn's writes and its audit events commit together or not at all
 * (DESIGN.md: every mutation and its audit event in one transaction).
 */
export async function transaction<T>(pool: Pool, fn: (tx: Tx) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  const events: AuditInput[] = [];
  const after: (() => void)[] = [];
  const tx: Tx = {
    client,
    query: client.query.bind(client) as PoolClient["query"],
    audit: (event) => void events.push(event),
    afterCommit: (f) => void after.push(f),
  };
  let result: T;
  try {
    await client.query("BEGIN");
    result = await fn(tx);
    await appendAudit(client, events);
    await client.query("COMMIT");
  } catch (err) {
    // A client whose ROLLBACK fails is broken (connection lost): destroy it rather than pool it.
    const rolledBack = await client.query("ROLLBACK").then(
      () => true,
      () => false,
    );
    client.release(rolledBack ? undefined : true);
    throw err;
  }
  client.release();
  for (const f of after) f();
  return result;
}

/** Records an audit event on its own, e.g. for a refused attempt whose own transaction never ran. */
export async function recordAudit(pool: Pool, event: AuditInput): Promise<void> {
  await transaction(pool, async (tx) => tx.audit(event));
}
