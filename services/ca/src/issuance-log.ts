import { transaction, type AuditInput, type Pool } from "@fabric/platform";
import type { CertificateRecord } from "./certificate-record.js";
import { CompromisedKeyError, compromisedAmong } from "./compromised-keys.js";
import { insertCertificates } from "./inventory.js";

/** One issuance as the inventory and the audit log record it. */
export interface IssuanceEntry {
  record: CertificateRecord;
  audit: AuditInput;
}

/** What became of a batch: the serials recorded, and those refused because their key is compromised. */
export interface BatchOutcome {
  inserted: Set<string>;
  compromised: Set<string>;
}

/** Records a batch of issuances in one transaction. */
export type BatchWriter = (entries: IssuanceEntry[]) => Promise<BatchOutcome>;

/**
 * The batch transaction: certificates for compromised keys are refused, the others' inventory rows go in
 * in one statement, then the audit event of each new one.
 */
export function writeIssuances(pool: Pool): BatchWriter {
  return (entries) =>
    transaction(pool, async (tx) => {
      const keys = entries.flatMap((e) => (e.record.publicKeySha256 ? [e.record.publicKeySha256] : []));
      const bad = await compromisedAmong(tx, keys);
      const refused = (e: IssuanceEntry) => bad.has(e.record.publicKeySha256 ?? "");
      const inserted = await insertCertificates(
        tx,
        entries.filter((e) => !refused(e)).map((e) => e.record),
      );
      for (const e of entries) if (inserted.has(e.record.serial)) tx.audit(e.audit);
      return { inserted, compromised: new Set(entries.filter(refused).map((e) => e.record.serial)) };
    });
}

interface Pending extends IssuanceEntry {
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** The audit event of one issuance. */
export function issuanceAudit(record: CertificateRecord, actor: { id: string; kind: string }): AuditInput {
  return {
    actorId: actor.id,
    actorKind: actor.kind,
    action: "certificate.issue",
    targetType: "certificate",
    targetId: record.serial,
    clusterId: record.clusterId,
    orgId: record.organizationId,
    outcome: "success",
    details: {
      principal: `${record.principalKind}/${record.principalId}`,
      spiffeId: record.spiffeId,
      grants: record.grants.join(","),
      notBefore: record.notBefore.toISOString(),
      notAfter: record.notAfter.toISOString(),
      fingerprintSha256: record.fingerprintSha256,
      authorizationRef: record.authorizationRef,
    },
  };
}

/**
 * Group commit for issued certificates: every issuance waits until its inventory row and audit event
 * are committed (a certificate is never handed out unrecorded), but concurrent issuances share one
 * transaction. While batches commit, the next gathers; a batch is at most `maxBatch` records. Two
 * batches may be in flight: the second writes its rows while the first waits for its commit to reach
 * disk, then queues on the audit chain's head row, so the chain stays in order.
 */
export class IssuanceLog {
  private queue: Pending[] = [];
  private readonly committing = new Set<Promise<void>>();
  private scheduled = false;

  constructor(
    private readonly write: BatchWriter,
    private readonly maxBatch = 1_000,
    private readonly maxInFlight = 2,
  ) {}

  /** Resolves once the record and its audit event are committed; rejects if that transaction failed. */
  record(record: CertificateRecord, audit: AuditInput): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ record, audit, resolve, reject });
      this.kick();
    });
  }

  /** Resolves when everything recorded so far is committed (or failed). */
  async drain(): Promise<void> {
    while (this.committing.size > 0 || this.queue.length > 0) {
      this.kick();
      // Nothing in flight yet: the batch starts on the next turn of the event loop.
      await (this.committing.size > 0 ? Promise.race(this.committing) : new Promise((r) => setImmediate(r)));
    }
  }

  private kick(): void {
    if (this.scheduled || this.queue.length === 0 || this.committing.size >= this.maxInFlight) return;
    // Let the requests that arrive in this turn of the event loop join the batch.
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.queue.length === 0 || this.committing.size >= this.maxInFlight) return;
      const batch = this.queue.splice(0, this.maxBatch);
      const done: Promise<void> = this.commit(batch).finally(() => {
        this.committing.delete(done);
        this.kick();
      });
      this.committing.add(done);
    });
  }

  private async commit(batch: Pending[]): Promise<void> {
    let outcome: BatchOutcome;
    try {
      // Only the data: the batch crosses to the recorder thread.
      outcome = await this.write(batch.map(({ record, audit }) => ({ record, audit })));
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    for (const p of batch) {
      if (outcome.inserted.has(p.record.serial)) p.resolve();
      // Signed but never recorded, so never handed out.
      else if (outcome.compromised.has(p.record.serial)) p.reject(new CompromisedKeyError());
      // A repeated 128-bit random serial means a broken RNG: never hand out that certificate.
      else
        p.reject(new Error(`serial ${p.record.serial} is already in the inventory; refusing the duplicate`));
    }
  }
}
