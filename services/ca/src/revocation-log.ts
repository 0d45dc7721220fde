import {
  principalKey,
  REVOCATION_RETENTION_MS,
  type Pool,
  type PrincipalKind,
  type RevokedEntry,
  type Tx,
} from "@fabric/platform";

/**
 * One row of the revocation feed: a certificate (`serial` set) or a whole principal (`serial` empty:
 * every certificate of theirs starting at or before `revokedAt`).
 */
export interface RevocationEvent {
  version: bigint;
  serial: string;
  principalKind: PrincipalKind;
  principalId: string;
  clusterId: string;
  /** RFC 5280 CRLReason code. */
  reason: number;
  revokedAt: Date;
  /** After this the entry is moot: whatever it covers has expired. */
  notAfter: Date;
}

interface Row {
  version: string;
  serial: string;
  principal_kind: PrincipalKind;
  principal_id: string;
  cluster_id: string;
  reason: number;
  revoked_at: Date;
  not_after: Date;
}

const COLUMNS =
  "version::text, serial, principal_kind, principal_id, cluster_id, reason, revoked_at, not_after";

const fromRow = (r: Row): RevocationEvent => ({
  version: BigInt(r.version),
  serial: r.serial,
  principalKind: r.principal_kind,
  principalId: r.principal_id,
  clusterId: r.cluster_id,
  reason: r.reason,
  revokedAt: r.revoked_at,
  notAfter: r.not_after,
});

/** The platform RevocationSet's view of an event (the CA feeds its own set directly). */
export function toRevokedEntry(e: RevocationEvent): RevokedEntry {
  return e.serial
    ? { serialHex: e.serial, notAfter: e.notAfter }
    : {
        principal: principalKey(e.principalKind, e.principalId),
        revokedAt: e.revokedAt,
        notAfter: e.notAfter,
      };
}

/**
 * Appends events inside the revoking transaction. The head row is locked first, so versions are handed
 * out and committed strictly in order: a watcher that has seen version V has seen everything below it.
 */
export async function appendRevocations(
  tx: Tx,
  events: Omit<RevocationEvent, "version">[],
): Promise<RevocationEvent[]> {
  const head = await tx.query<{ version: string }>("SELECT version::text FROM revocation_head FOR UPDATE");
  let version = BigInt(head.rows[0]!.version);
  const out = events.map((e) => ({ ...e, version: ++version }));
  if (out.length === 0) return out;
  await tx.query(
    `INSERT INTO revocation_events (version, serial, principal_kind, principal_id, cluster_id, reason,
       revoked_at, not_after)
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
       $7::timestamptz[], $8::timestamptz[])`,
    [
      out.map((e) => e.version.toString()),
      out.map((e) => e.serial),
      out.map((e) => e.principalKind),
      out.map((e) => e.principalId),
      out.map((e) => e.clusterId),
      out.map((e) => e.reason),
      out.map((e) => e.revokedAt),
      out.map((e) => e.notAfter),
    ],
  );
  await tx.query("UPDATE revocation_head SET version = $1", [version.toString()]);
  return out;
}

/**
 * The feed at one consistent point: its head version and the events up to it (all of them, or only those
 * after `after`) that still matter. Read in one REPEATABLE READ snapshot so head and events agree.
 *
 * An event stays listed until REVOCATION_RETENTION_MS after the notAfter of what it covers, not just until
 * notAfter by the database's clock: a follower whose clock runs behind still sees that certificate as
 * valid, and must still know it is revoked (platform/src/revocation.ts keeps entries as long).
 */
export async function readRevocations(
  pool: Pool,
  after = 0n,
): Promise<{ head: bigint; events: RevocationEvent[] }> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    const head = await client.query<{ version: string }>("SELECT version::text FROM revocation_head");
    const { rows } = await client.query<Row>(
      `SELECT ${COLUMNS} FROM revocation_events
         WHERE version > $1 AND not_after > now() - make_interval(secs => $2::double precision / 1000)
         ORDER BY version`,
      [after.toString(), REVOCATION_RETENTION_MS],
    );
    await client.query("COMMIT");
    const result = { head: BigInt(head.rows[0]!.version), events: rows.map(fromRow) };
    client.release();
    return result;
  } catch (err) {
    // A failed ROLLBACK means a broken connection: destroy the client rather than pool it.
    const rolledBack = await client.query("ROLLBACK").then(
      () => true,
      () => false,
    );
    client.release(rolledBack ? undefined : true);
    throw err;
  }
}

type Listener = (events: RevocationEvent[]) => void;

/**
 * Hands committed revocations to the open WatchRevocations streams of this process (the CA runs as one
 * replica; a restarted CA's watchers resume from the table). Published from the transaction's
 * afterCommit, so a watcher never sees an event that could still roll back.
 */
export class RevocationBroadcaster {
  private readonly listeners = new Set<Listener>();

  publish(events: RevocationEvent[]): void {
    for (const listener of this.listeners) listener(events);
  }

  /**
   * Starts buffering events before the caller reads the table (so nothing committed in between is
   * lost); iterate the result to receive them. Ends when the signal aborts.
   */
  subscribe(signal: AbortSignal): AsyncIterable<RevocationEvent> {
    const buffer: RevocationEvent[] = [];
    let wake: (() => void) | undefined;
    const listener: Listener = (events) => {
      buffer.push(...events);
      wake?.();
    };
    this.listeners.add(listener);
    const stop = () => {
      this.listeners.delete(listener);
      wake?.();
    };
    signal.addEventListener("abort", stop, { once: true });
    const listeners = this.listeners;
    return {
      async *[Symbol.asyncIterator]() {
        try {
          while (!signal.aborted) {
            const next = buffer.shift();
            if (next) {
              yield next;
              continue;
            }
            await new Promise<void>((resolve) => (wake = resolve));
            wake = undefined;
          }
        } finally {
          listeners.delete(listener);
          signal.removeEventListener("abort", stop);
        }
      },
    };
  }
}
