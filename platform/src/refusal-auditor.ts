import pg from "pg";
import type { AuditInput } from "./audit.js";
import { sleep, systemClock, type Clock } from "./clock.js";
import type { Pool } from "./database.js";
import type { Logger } from "./logger.js";
import { hostOfAddress } from "./remote-address.js";
import { transaction } from "./transactions.js";

/** A refused attempt as the audit log records it (outcome "refused"). details.address: the caller's ip:port. */
export type RefusalEvent = Omit<AuditInput, "outcome">;

/** Refusals written per transaction at most, besides the aggregates; bounds the audit-head lock hold. */
export const REFUSAL_BATCH_MAX = 256;
/** Refusals waiting for their own event; past this the auditor is flooded and aggregates. */
export const REFUSAL_MAX_QUEUED = 1_024;
/** Distinct aggregates (rpc, code, principal or caller address, reason) held between writes. */
export const REFUSAL_MAX_AGGREGATES = 512;
/**
 * Least time between two refusal transactions. Every audit append locks the chain's head row until it
 * commits, so back-to-back refusal batches would make the service's own audited changes queue behind
 * them; spaced out, a change waits for one batch at most, and refusals arriving in between are batched
 * (or, past REFUSAL_MAX_QUEUED, folded).
 */
export const REFUSAL_WRITE_INTERVAL_MS = 100;
/** Longest a caller of recordAndWait waits for its event to be written. */
export const REFUSAL_CALLER_WAIT_MS = 1_000;
/** Longest pause between attempts while the database refuses the writes. */
const RETRY_MAX_MS = 30_000;

export interface RefusalAuditorOptions {
  /** The auditor's own pool (its one connection): refusals never take a connection from the service's. */
  pool: Pool;
  logger: Logger;
  clock?: Clock;
  batchMax?: number;
  maxQueued?: number;
  maxAggregates?: number;
  writeIntervalMs?: number;
  callerWaitMs?: number;
}

export interface RefusalAuditorStats {
  /** Refusals handed to the auditor. */
  recorded: number;
  /** Refusals written as events of their own. */
  written: number;
  /** Refusals written inside aggregate events (their counts). */
  aggregated: number;
  /** Refusals not yet written. */
  pending: number;
}

interface Queued {
  event: RefusalEvent;
  at: number;
  written?: () => void;
}

interface Aggregate {
  event: RefusalEvent;
  count: number;
  first: number;
  last: number;
}

const anonymousCaller = (event: RefusalEvent) => event.actorKind === "anonymous";

/**
 * Identical refusals: same action and target (the rpc), same details but the caller's port (the code and
 * reason), and the same principal, or for anonymous callers the same source address.
 */
function aggregateKey(event: RefusalEvent): string {
  const { address = "", ...details } = event.details ?? {};
  return JSON.stringify([
    event.action,
    event.targetType ?? "",
    event.targetId ?? "",
    event.clusterId ?? "",
    event.orgId ?? "",
    event.actorKind,
    event.actorId,
    anonymousCaller(event) ? hostOfAddress(address) : "",
    Object.entries(details).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  ]);
}

const iso = (ms: number) => new Date(ms).toISOString();

function aggregateInput(a: Aggregate): AuditInput {
  const { address = "", ...details } = a.event.details ?? {};
  return {
    ...a.event,
    outcome: "refused",
    details: {
      ...details,
      ...(anonymousCaller(a.event) ? { address: hostOfAddress(address) } : {}),
      aggregated: "identical",
      count: String(a.count),
      firstAt: iso(a.first),
      lastAt: iso(a.last),
    },
  };
}

/** Refusals too varied for the aggregate table, counted per action. */
function overflowInput(action: string, a: Aggregate): AuditInput {
  return {
    actorId: "various",
    actorKind: "various",
    action,
    outcome: "refused",
    details: {
      aggregated: "overflow",
      count: String(a.count),
      firstAt: iso(a.first),
      lastAt: iso(a.last),
      note: "refusals from too many distinct callers or reasons to aggregate one by one",
    },
  };
}

/**
 * Writes refused attempts to the audit log without holding up the refusal or the service's pool: callers
 * enqueue and go on, and one writer loop commits them in batches on the auditor's own connection, through
 * the audit chain (transactions.ts), in order. When refusals arrive faster than they are written, those
 * past REFUSAL_MAX_QUEUED are folded into one event per identical refusal, with a count and the first and
 * last time, and past REFUSAL_MAX_AGGREGATES distinct ones into one overflow event per action: memory
 * stays bounded and every refusal is either its own event or counted in exactly one aggregate. A batch the
 * database refuses is folded in the same way and retried with backoff.
 */
export class RefusalAuditor {
  private readonly pool: Pool;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly batchMax: number;
  private readonly maxQueued: number;
  private readonly maxAggregates: number;
  private readonly writeIntervalMs: number;
  private readonly callerWaitMs: number;
  private lastWrite = Number.NEGATIVE_INFINITY;
  private queue: Queued[] = [];
  private aggregates = new Map<string, Aggregate>();
  private overflow = new Map<string, Aggregate>();
  private writing = false;
  private flooded = false;
  private idleWaiters: (() => void)[] = [];
  private readonly closing = new AbortController();
  private readonly counts = { recorded: 0, written: 0, aggregated: 0 };

  constructor(options: RefusalAuditorOptions) {
    this.pool = options.pool;
    this.logger = options.logger;
    this.clock = options.clock ?? systemClock;
    this.batchMax = options.batchMax ?? REFUSAL_BATCH_MAX;
    this.maxQueued = options.maxQueued ?? REFUSAL_MAX_QUEUED;
    this.maxAggregates = options.maxAggregates ?? REFUSAL_MAX_AGGREGATES;
    this.writeIntervalMs = options.writeIntervalMs ?? REFUSAL_WRITE_INTERVAL_MS;
    this.callerWaitMs = options.callerWaitMs ?? REFUSAL_CALLER_WAIT_MS;
  }

  /** Records a refusal; returns at once. */
  record(event: RefusalEvent): void {
    this.enqueue(event);
  }

  /**
   * Records a refusal and resolves once its event is committed, so a caller who saw the refusal finds it
   * in the audit log; at once if it was aggregated (a flood), and after REFUSAL_CALLER_WAIT_MS at most.
   */
  recordAndWait(event: RefusalEvent): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(resolve, this.callerWaitMs);
      const queued = this.enqueue(event, () => {
        this.clock.clearTimeout(timer);
        resolve();
      });
      if (!queued) {
        this.clock.clearTimeout(timer);
        resolve();
      }
    });
  }

  stats(): RefusalAuditorStats {
    const { recorded, written, aggregated } = this.counts;
    return { recorded, written, aggregated, pending: recorded - written - aggregated };
  }

  /** Resolves when everything recorded so far is written. */
  flush(): Promise<void> {
    if (!this.writing && this.empty()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Writes what is pending (waiting at most `waitMs`), then closes the auditor's connection. */
  async close(waitMs = 5_000): Promise<void> {
    const waited = new AbortController();
    await Promise.race([this.flush(), sleep(this.clock, waitMs, waited.signal)]);
    waited.abort();
    this.closing.abort();
    const { pending } = this.stats();
    if (pending > 0)
      this.logger.error({ pending }, "refusals not audited: the auditor closed before writing them");
    await this.pool.end();
  }

  /** True when queued for an event of its own (and `written` will be called), false when aggregated. */
  private enqueue(event: RefusalEvent, written?: () => void): boolean {
    this.counts.recorded += 1;
    const at = this.clock.now();
    const queued = this.queue.length < this.maxQueued;
    if (queued) this.queue.push({ event, at, ...(written ? { written } : {}) });
    else this.aggregate(event, 1, at, at);
    if (!this.writing) void this.drain();
    return queued;
  }

  private aggregate(event: RefusalEvent, count: number, first: number, last: number): void {
    if (!this.flooded) {
      this.flooded = true;
      this.logger.warn("refusals arrive faster than they are audited: identical ones are aggregated");
    }
    const key = aggregateKey(event);
    const table =
      this.aggregates.has(key) || this.aggregates.size < this.maxAggregates ? this.aggregates : undefined;
    const map = table ?? this.overflow;
    const slot = table ? key : event.action;
    const current = map.get(slot);
    if (current) {
      current.count += count;
      current.first = Math.min(current.first, first);
      current.last = Math.max(current.last, last);
    } else map.set(slot, { event, count, first, last });
  }

  private empty(): boolean {
    return this.queue.length === 0 && this.aggregates.size === 0 && this.overflow.size === 0;
  }

  private async drain(): Promise<void> {
    this.writing = true;
    let failures = 0;
    while (!this.empty() && !this.closing.signal.aborted) {
      const wait = this.lastWrite + this.writeIntervalMs - this.clock.now();
      if (wait > 0) await sleep(this.clock, wait, this.closing.signal);
      if (this.closing.signal.aborted) break;
      const batch = this.queue.splice(0, this.batchMax);
      const aggregates = [...this.aggregates.values()];
      const overflow = [...this.overflow.entries()];
      this.aggregates = new Map();
      this.overflow = new Map();
      const inputs: AuditInput[] = [
        ...batch.map((q): AuditInput => ({ ...q.event, outcome: "refused" })),
        ...aggregates.map(aggregateInput),
        ...overflow.map(([action, a]) => overflowInput(action, a)),
      ];
      const folded = [...aggregates, ...overflow.map(([, a]) => a)].reduce((n, a) => n + a.count, 0);
      try {
        await transaction(this.pool, async (tx) => {
          for (const input of inputs) tx.audit(input);
        });
        this.lastWrite = this.clock.now();
        failures = 0;
        this.counts.written += batch.length;
        this.counts.aggregated += folded;
        for (const q of batch) q.written?.();
      } catch (err) {
        failures += 1;
        this.logger.warn(
          { err: (err as Error).message, refusals: batch.length + folded },
          "could not audit refusals; keeping them counted and retrying",
        );
        // Nothing is dropped: the batch comes back as aggregates (bounded), its waiters stop waiting.
        for (const q of batch) {
          this.aggregate(q.event, 1, q.at, q.at);
          q.written?.();
        }
        for (const a of aggregates) this.aggregate(a.event, a.count, a.first, a.last);
        for (const [, a] of overflow) this.aggregate(a.event, a.count, a.first, a.last);
        await sleep(
          this.clock,
          Math.min(RETRY_MAX_MS, 250 * 2 ** Math.min(failures, 8)),
          this.closing.signal,
        );
      }
    }
    this.writing = false;
    if (this.empty()) {
      if (this.flooded) this.logger.info(this.counts, "refusal audit caught up");
      this.flooded = false;
      for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }
}

const auditors = new WeakMap<Pool, RefusalAuditor>();

/**
 * The one refusal auditor of a service, keyed by its pool: the authorization interceptor's refusals
 * (refusal-audit.ts) and handlers' own refused attempts share its queue, aggregates and connection. The
 * connection is a pool of one of its own, with the service pool's settings, that lets the process exit
 * when idle.
 */
export function refusalAuditorFor(pool: Pool, logger: Logger): RefusalAuditor {
  let auditor = auditors.get(pool);
  if (!auditor) {
    const own = new pg.Pool({
      ...pool.options,
      // pg-pool keeps the password off the enumerable options, so a spread would lose it.
      password: pool.options.password,
      max: 1,
      min: 0,
      allowExitOnIdle: true,
      application_name: `${pool.options.application_name ?? "fabric"}-refusals`,
    });
    // A lost connection must not crash the process (as database.ts): the next write fails and is retried.
    own.on("error", () => {});
    own.on("connect", (client) => client.on("error", () => {}));
    auditor = new RefusalAuditor({ pool: own, logger });
    auditors.set(pool, auditor);
  }
  return auditor;
}
