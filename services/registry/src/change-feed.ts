import pg from "pg";
import { unavailable, type Logger, type Pool } from "@fabric/platform";
import { CHANGES_CHANNEL } from "./changes.js";
import {
  ENTITY_KINDS,
  decodeEntity,
  entityKey,
  isEntityKind,
  type AnyEntity,
  type EntityKind,
} from "./entities.js";
import { LOADERS } from "./loaders.js";
import type { FeedChange, Model } from "./model.js";
import { AsyncQueue } from "./queue.js";

interface ChangeRow {
  version: string;
  kind: string;
  entity_key: string;
  cluster_ids: string[];
  deleted: boolean;
  payload: Buffer;
}

const CHANGE_COLUMNS = "version::text, kind, entity_key, cluster_ids, deleted, payload";
const PAGE = 1000;

export interface ChangeFeedOptions {
  pool: Pool;
  /** The database URL, for the dedicated LISTEN connection. */
  databaseUrl: string;
  model: Model;
  logger: Logger;
  /** Safety-net poll interval, in case a notification is lost. */
  pollMs: number;
  /** Recent changes kept in memory (up to twice as many) so resuming watchers rarely need the database. */
  memoryChanges: number;
  /** Queued changes after which a watcher that does not keep up is cut (it resumes from its version). */
  maxWatcherBacklog: number;
}

/**
 * Follows the changes table into the model: loads everything once at start, then applies each committed
 * change in version order when Postgres notifies (LISTEN on a dedicated connection, with a slow poll as a
 * safety net), and hands each change to the live watchers. While the database is unreachable the model
 * stays as it was and keeps serving reads; the feed catches up when the database is back.
 */
export class ChangeFeed {
  private ring: FeedChange[] = [];
  /** The ring holds every change after this version. */
  private ringFloor = 0n;
  private readonly watchers = new Set<AsyncQueue<FeedChange>>();
  private pulling = false;
  private pullAgain = false;
  private stopped = false;
  private listener: pg.Client | undefined;
  private pollTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: ChangeFeedOptions) {}

  async start(): Promise<void> {
    await this.load();
    void this.listen();
    this.pollTimer = setInterval(() => void this.poll(), this.options.pollMs);
    this.pollTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.pollTimer);
    for (const w of this.watchers) w.end();
    this.watchers.clear();
    await this.listener?.end().catch(() => {});
  }

  /** Changes applied from now on, until close(); a watcher that falls too far behind is failed. */
  subscribe(): AsyncQueue<FeedChange> & { close(): void } {
    const queue = Object.assign(new AsyncQueue<FeedChange>(), {
      close: () => {
        this.watchers.delete(queue);
        queue.end();
      },
    });
    this.watchers.add(queue);
    return queue;
  }

  /**
   * The changes after `after` up to `upTo`, from memory when it reaches back that far, else from the
   * database; undefined when some of them were already deleted by retention (the watcher must relist).
   */
  async replay(after: bigint, upTo: bigint): Promise<AsyncIterable<FeedChange> | FeedChange[] | undefined> {
    if (after >= this.ringFloor) {
      return this.ring.filter((c) => c.version > after && c.version <= upTo);
    }
    if ((await this.readPrunedThrough()) > after) return undefined;
    return this.replayFromDatabase(after, upTo);
  }

  private async *replayFromDatabase(after: bigint, upTo: bigint): AsyncGenerator<FeedChange> {
    let cursor = after;
    for (;;) {
      const { rows } = await this.options.pool.query<ChangeRow>(
        `SELECT ${CHANGE_COLUMNS} FROM changes WHERE version > $1 AND version <= $2 ORDER BY version LIMIT ${PAGE}`,
        [cursor.toString(), upTo.toString()],
      );
      for (const row of rows) {
        const change = toChange(row);
        if (change) yield change;
        cursor = BigInt(row.version);
      }
      if (rows.length < PAGE) break;
    }
    // Retention may have run while we read: if it reached into the range, rows may be missing.
    if ((await this.readPrunedThrough()) > after) {
      throw unavailable("the change feed was pruned while replaying; reconnect to receive a full list");
    }
  }

  /** Loads every entity at one consistent version (start-up, or after falling behind retention). */
  private async load(): Promise<void> {
    const client = await this.options.pool.connect();
    try {
      await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      const head = await client.query<{ version: string; pruned: string }>(
        `SELECT GREATEST((SELECT COALESCE(max(version), 0) FROM changes), pruned_through)::text AS version,
                pruned_through::text AS pruned FROM change_retention`,
      );
      const versions = new Map(
        (
          await client.query<{ kind: string; entity_key: string; version: string }>(
            "SELECT kind, entity_key, max(version)::text AS version FROM changes GROUP BY kind, entity_key",
          )
        ).rows.map((r) => [`${r.kind}:${r.entity_key}`, BigInt(r.version)]),
      );
      const pruned = BigInt(head.rows[0]!.pruned);
      const entities: { kind: EntityKind; key: string; version: bigint; value: AnyEntity }[] = [];
      for (const kind of ENTITY_KINDS) {
        for (const value of await LOADERS[kind](client, null)) {
          const key = entityKey(kind, value as never);
          // An entity whose last change was pruned changed at some version up to the pruned mark.
          entities.push({ kind, key, value, version: versions.get(`${kind}:${key}`) ?? pruned });
        }
      }
      await client.query("COMMIT");
      const version = BigInt(head.rows[0]!.version);
      this.ring = [];
      this.ringFloor = version;
      this.options.model.reset(version, entities);
    } catch (err) {
      await client.query("ROLLBACK").catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  private async listen(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      const client = new pg.Client({
        connectionString: this.options.databaseUrl,
        application_name: "fabric-registry-feed",
      });
      client.on("error", () => {}); // a lost connection ends it; the loop reconnects
      client.on("notification", () => this.pull());
      try {
        await client.connect();
        await client.query(`LISTEN ${CHANGES_CHANNEL}`);
        this.listener = client;
        failures = 0;
        this.pull(); // whatever was committed while we were not listening
        await new Promise<void>((resolve) => client.once("end", () => resolve()));
      } catch (err) {
        failures += 1;
        this.options.logger.warn({ err: (err as Error).message, failures }, "change feed listener down");
        await client.end().catch(() => {});
      }
      if (this.stopped) return;
      await new Promise((r) => setTimeout(r, Math.random() * Math.min(5_000, 100 * 2 ** failures)).unref());
    }
  }

  private async poll(): Promise<void> {
    try {
      const pruned = await this.readPrunedThrough();
      if (pruned > this.options.model.version) {
        // We were away longer than the retention: changes we never saw are gone, so reload, and make
        // watchers resume (they will get a full list).
        this.options.logger.warn(
          { pruned, version: this.options.model.version },
          "change feed fell behind retention; reloading",
        );
        await this.load();
        for (const w of this.watchers)
          w.fail(unavailable("the registry reloaded its state; reconnect to receive a full list"));
        this.watchers.clear();
      }
      this.pull();
    } catch {
      // Database unreachable: keep serving what we hold; the next poll or notification catches up.
    }
  }

  private async readPrunedThrough(): Promise<bigint> {
    const { rows } = await this.options.pool.query<{ pruned: string }>(
      "SELECT pruned_through::text AS pruned FROM change_retention",
    );
    return BigInt(rows[0]!.pruned);
  }

  /** Reads and applies everything committed after the model's version; one pull runs at a time. */
  private pull(): void {
    if (this.pulling) {
      this.pullAgain = true;
      return;
    }
    this.pulling = true;
    void (async () => {
      try {
        do {
          this.pullAgain = false;
          await this.pullPages();
        } while (this.pullAgain && !this.stopped);
      } catch (err) {
        this.options.logger.debug({ err: (err as Error).message }, "change feed read failed; will retry");
      } finally {
        this.pulling = false;
      }
    })();
  }

  private async pullPages(): Promise<void> {
    for (;;) {
      const { rows } = await this.options.pool.query<ChangeRow>(
        `SELECT ${CHANGE_COLUMNS} FROM changes WHERE version > $1 ORDER BY version LIMIT ${PAGE}`,
        [this.options.model.version.toString()],
      );
      for (const row of rows) {
        const change = toChange(row);
        if (change) this.apply(change);
        else this.options.model.version = BigInt(row.version);
      }
      if (rows.length < PAGE) return;
    }
  }

  private apply(change: FeedChange): void {
    this.options.model.apply(change);
    this.ring.push(change);
    // Trimmed in halves, not one by one (shift is linear in the ring's length).
    if (this.ring.length > 2 * this.options.memoryChanges) {
      const drop = this.ring.length - this.options.memoryChanges;
      this.ringFloor = this.ring[drop - 1]!.version;
      this.ring = this.ring.slice(drop);
    }
    for (const w of this.watchers) {
      if (w.size >= this.options.maxWatcherBacklog) {
        w.fail(
          unavailable(
            "this watcher fell too far behind; reconnect with resume_from_version set to the last version you applied",
          ),
        );
        this.watchers.delete(w);
      } else w.push(change);
    }
  }
}

function toChange(row: ChangeRow): FeedChange | undefined {
  // Rows of kinds this build does not know (written by a newer registry) are skipped, not fatal.
  if (!isEntityKind(row.kind)) return undefined;
  return {
    version: BigInt(row.version),
    kind: row.kind,
    key: row.entity_key,
    deleted: row.deleted,
    entity: decodeEntity(row.kind, row.payload),
    clusterIds: row.cluster_ids,
  };
}
