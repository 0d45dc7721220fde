import {
  createHash,
  createPrivateKey,
  randomUUID,
  sign,
  verify,
  X509Certificate,
  type KeyObject,
} from "node:crypto";
import {
  AUDIT_COLUMNS,
  GENESIS,
  auditEventFromRow,
  firstBrokenLink,
  type AuditEvent,
  type AuditRow,
  type ChainAnchors,
  type ChainProblem,
} from "./audit.js";
import type { Pool } from "./database.js";
import type { Logger } from "./logger.js";
import { inspectCertificate, verifyChain } from "./pki/certificates.js";
import { normalizePem, splitCertificates } from "./pki/pem.js";
import type { ServiceName } from "./pki/principal-kinds.js";
import { buildSpiffeId } from "./pki/spiffe.js";
import type { RevocationSet } from "./revocation.js";
import type { TlsCredentials } from "./tls-credentials.js";

/**
 * Signed checkpoints anchor a service's audit chain outside the chain itself. A hash chain shows a record
 * changed in place, but whoever can write the table (a Postgres superuser, the schema's owner) can also
 * rewrite a record and recompute every later hash, or cut records off the end, and the chain still
 * verifies. So the service signs, on a cadence and at shutdown, a checkpoint of the records appended since
 * its last one: their hashes, the head's seq and hash, and the time, with its own service identity key
 * (which never leaves the process). Checkpoints go to audit_checkpoints (the service's role may only
 * insert there), to the service's log (a copy off the database host), and the newest stays in the
 * process's memory. VerifyAudit trusts a checkpoint only if its signature verifies with a certificate that
 * chains to the CA bundle, was valid when it signed, is not revoked, and names this service; then every
 * record it covers must still have the hash it recorded (else: rewritten, at that very record), and none
 * of them may be gone (else: truncated).
 *
 * What stays open: a superuser who deletes the checkpoints along with the records they cover leaves
 * nothing in the database to compare with. The running process still remembers its newest checkpoint
 * (VerifyAudit reports it missing), and every checkpoint is in the service's log.
 */

const FORMAT = "fabric-audit-checkpoint/v1";
/** Most records one checkpoint covers: it stores their hashes, 32 bytes each. */
export const CHECKPOINT_MAX_ROWS = 10_000;
/** How far ahead of this process's clock a checkpoint's signing time may be (replicas' clocks differ). */
const CLOCK_SKEW_MS = 5 * 60_000;

export interface Checkpoint {
  id: string;
  service: string;
  fromSeq: bigint;
  seq: bigint;
  hash: Buffer;
  rowHashes: Buffer;
  signedAt: Date;
  /** PEM: the signing certificate, then its intermediates. */
  signerChain: string;
  signature: Buffer;
}

/** The bytes a checkpoint's signature covers: service, range, head hash, digest of the record hashes, time. */
export function checkpointPayload(c: Omit<Checkpoint, "id" | "signerChain" | "signature">): Buffer {
  return Buffer.from(
    JSON.stringify([
      FORMAT,
      c.service,
      c.fromSeq.toString(),
      c.seq.toString(),
      c.hash.toString("hex"),
      createHash("sha256").update(c.rowHashes).digest("hex"),
      c.signedAt.toISOString(),
    ]),
  );
}

interface CheckpointRow {
  id: string;
  from_seq: string;
  seq: string;
  hash: Buffer;
  row_hashes: Buffer;
  signed_at: Date;
  signer_chain: string;
  signature: Buffer;
}

const CHECKPOINT_COLUMNS =
  "id, from_seq::text, seq::text, hash, row_hashes, signed_at, signer_chain, signature";

const fromRow = (service: string, r: CheckpointRow): Checkpoint => ({
  id: r.id,
  service,
  fromSeq: BigInt(r.from_seq),
  seq: BigInt(r.seq),
  hash: r.hash,
  rowHashes: r.row_hashes,
  signedAt: r.signed_at,
  signerChain: r.signer_chain,
  signature: r.signature,
});

const describeCheckpoint = (c: Pick<Checkpoint, "fromSeq" | "seq" | "signedAt">) =>
  `checkpoint of records ${c.fromSeq + 1n}-${c.seq} signed at ${c.signedAt.toISOString()}`;

export interface AuditCheckpointOptions {
  service: ServiceName;
  trustDomain: string;
  /** The service's current identity: its key signs, its CA bundle verifies. */
  identity: () => TlsCredentials;
  revocations: RevocationSet;
  logger: Logger;
}

/** Signs checkpoints of one service's audit chain and checks them (ChainAnchors for verifyAudit). */
export class AuditCheckpoints {
  /** The newest checkpoint this process signed: a copy the database cannot take back. */
  private last: Checkpoint | undefined;
  private signing: Promise<void> = Promise.resolve();
  private key: { creds: TlsCredentials; key: KeyObject } | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly options: AuditCheckpointOptions,
  ) {}

  /** Signs a checkpoint every `intervalMs` while the head moves. */
  start(intervalMs: number): void {
    this.timer = setInterval(() => void this.checkpoint(), intervalMs);
    this.timer.unref();
  }

  /** Stops the cadence and signs the records appended since the last checkpoint. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.checkpoint();
  }

  /**
   * Signs checkpoints of the records appended since the newest checkpoint, up to the head. One runs at a
   * time; a failure is logged (the next one covers the same records).
   */
  checkpoint(): Promise<void> {
    this.signing = this.signing.then(() =>
      this.signNew().catch((err: unknown) =>
        this.options.logger.error({ err: (err as Error).message }, "audit checkpoint failed"),
      ),
    );
    return this.signing;
  }

  private async signNew(): Promise<void> {
    const head = await this.pool.query<{ seq: string }>("SELECT seq::text FROM audit_head");
    const headSeq = BigInt(head.rows[0]!.seq);
    // Where the signed part ends: this process's newest checkpoint, or the table's (another replica's,
    // or an earlier run's) at or below the head.
    let from: bigint;
    if (this.last) from = this.last.seq;
    else {
      const newest = await this.pool.query<{ seq: string }>(
        "SELECT seq::text FROM audit_checkpoints WHERE seq <= $1 ORDER BY seq DESC LIMIT 1",
        [headSeq.toString()],
      );
      from = BigInt(newest.rows[0]?.seq ?? 0);
    }
    if (this.last && this.last.seq > headSeq) {
      throw new Error(
        `the audit log ends at record ${headSeq}, before record ${this.last.seq} this process signed: records were removed`,
      );
    }
    if (from >= headSeq) return;
    let prevHash = GENESIS;
    if (from > 0n) {
      const anchor = await this.pool.query<{ hash: Buffer }>("SELECT hash FROM audit_events WHERE seq = $1", [
        from.toString(),
      ]);
      if (!anchor.rows[0]) throw new Error(`audit record ${from} is missing: not checkpointing past it`);
      if (this.last && !anchor.rows[0].hash.equals(this.last.hash)) {
        throw new Error(
          `audit record ${from} no longer has the hash this process signed: not checkpointing past it`,
        );
      }
      prevHash = anchor.rows[0].hash;
    }
    while (from < headSeq) {
      const to: bigint =
        from + BigInt(CHECKPOINT_MAX_ROWS) < headSeq ? from + BigInt(CHECKPOINT_MAX_ROWS) : headSeq;
      const { rows } = await this.pool.query<AuditRow>(
        `SELECT ${AUDIT_COLUMNS} FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY audit_events.seq`,
        [from.toString(), to.toString()],
      );
      const events = rows.map(auditEventFromRow);
      // Only an intact chain is signed over: a broken link is VerifyAudit's to report, not to anchor.
      const link = firstBrokenLink(prevHash, from + 1n, events);
      if (link || events.length !== Number(to - from)) {
        throw new Error(
          `the audit chain is broken at record ${link?.seq ?? from + 1n}: not checkpointing past it`,
        );
      }
      const checkpoint = this.sign(from, to, events);
      await this.pool.query(
        `INSERT INTO audit_checkpoints (id, from_seq, seq, hash, row_hashes, signed_at, signer_chain, signature)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [
          checkpoint.id,
          checkpoint.fromSeq.toString(),
          checkpoint.seq.toString(),
          checkpoint.hash,
          checkpoint.rowHashes,
          checkpoint.signedAt,
          checkpoint.signerChain,
          checkpoint.signature,
        ],
      );
      this.last = checkpoint;
      // The log is a second copy, off the database host: enough to check the head against later.
      this.options.logger.info(
        {
          auditCheckpoint: {
            id: checkpoint.id,
            fromSeq: checkpoint.fromSeq.toString(),
            seq: checkpoint.seq.toString(),
            hash: checkpoint.hash.toString("hex"),
            signedAt: checkpoint.signedAt.toISOString(),
            signer: inspectCertificate(checkpoint.signerChain).serialHex,
            signature: checkpoint.signature.toString("base64"),
          },
        },
        "audit checkpoint signed",
      );
      from = to;
      prevHash = checkpoint.hash;
    }
  }

  private sign(fromSeq: bigint, seq: bigint, events: AuditEvent[]): Checkpoint {
    const creds = this.options.identity();
    if (this.key?.creds !== creds) this.key = { creds, key: createPrivateKey(creds.privateKeyPem) };
    const unsigned = {
      service: this.options.service,
      fromSeq,
      seq,
      hash: events.at(-1)!.hash,
      rowHashes: Buffer.concat(events.map((e) => e.hash)),
      signedAt: new Date(),
    };
    return {
      ...unsigned,
      id: randomUUID(),
      signerChain: [creds.certificatePem, ...creds.chainPem].map(normalizePem).join(""),
      signature: sign("sha256", checkpointPayload(unsigned), { key: this.key.key, dsaEncoding: "der" }),
    };
  }

  /** Why a checkpoint cannot be trusted; undefined when it can. */
  private untrusted(c: Checkpoint, bundlePem: string): string | undefined {
    try {
      return this.distrust(c, bundlePem);
    } catch (err) {
      return `it cannot be read: ${(err as Error).message}`;
    }
  }

  private distrust(c: Checkpoint, bundlePem: string): string | undefined {
    const certs = splitCertificates(c.signerChain);
    const leaf = certs[0];
    if (!leaf) return "it carries no signer certificate";
    const facts = inspectCertificate(leaf);
    const expected = buildSpiffeId({
      trustDomain: this.options.trustDomain,
      kind: "service",
      id: this.options.service,
    });
    if (facts.spiffeId !== expected)
      return `it was signed by ${facts.spiffeId ?? "an unnamed certificate"}, not ${expected}`;
    if (c.signedAt.getTime() > Date.now() + CLOCK_SKEW_MS) return "its signing time is in the future";
    if (!verifyChain(leaf, certs.slice(1), bundlePem, c.signedAt)) {
      return "its signer certificate does not chain to the CA bundle, or was not valid when it signed";
    }
    const presented = {
      serialHex: facts.serialHex,
      kind: "service",
      id: this.options.service,
      notBefore: facts.notBefore,
    };
    if (this.options.revocations.isRevoked(presented))
      return `its signer certificate ${facts.serialHex} is revoked`;
    const key = new X509Certificate(leaf).publicKey;
    if (!verify("sha256", checkpointPayload(c), key, c.signature)) return "its signature does not verify";
    return undefined;
  }

  /** The checks verifyAudit makes against the checkpoints, for one verification. */
  anchors(): ChainAnchors {
    const bundle = this.options.identity().caBundlePem;
    // Each checkpoint's signature is checked once per verification, however many batches it spans.
    const verdicts = new Map<string, string | undefined>();
    const verdict = (c: Checkpoint) => {
      if (!verdicts.has(c.id)) verdicts.set(c.id, this.untrusted(c, bundle));
      return verdicts.get(c.id);
    };
    const untrustedProblem = (c: Checkpoint, seq: bigint, why: string): ChainProblem => ({
      seq,
      problem: `untrusted checkpoint: the ${describeCheckpoint(c)} (id ${c.id}) cannot be trusted: ${why}`,
    });
    const last = this.last;
    return {
      check: async (events) => {
        const lo = events[0]!.seq;
        const hi = events.at(-1)!.seq;
        const { rows } = await this.pool.query<CheckpointRow>(
          `SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE from_seq < $1 AND seq >= $2`,
          [hi.toString(), lo.toString()],
        );
        const covering = rows.map((r) => fromRow(this.options.service, r));
        if (last && last.seq >= lo && last.seq <= hi && !covering.some((c) => c.id === last.id))
          covering.push(last);
        let first: ChainProblem | undefined;
        const found = (p: ChainProblem) => {
          if (!first || p.seq < first.seq) first = p;
        };
        for (const c of covering) {
          const start = c.fromSeq + 1n > lo ? c.fromSeq + 1n : lo;
          const why = verdict(c);
          if (why) {
            found(untrustedProblem(c, start, why));
            continue;
          }
          for (const e of events) {
            if (e.seq < start || e.seq > c.seq) continue;
            const offset = Number(e.seq - c.fromSeq - 1n) * 32;
            if (!c.rowHashes.subarray(offset, offset + 32).equals(e.hash)) {
              found({
                seq: e.seq,
                problem:
                  `rewritten: record ${e.seq} no longer has the hash the ${describeCheckpoint(c)} recorded: it was changed ` +
                  "and the chain after it re-hashed",
              });
              break;
            }
          }
        }
        return first;
      },
      beyondHead: async (headSeq) => {
        const { rows } = await this.pool.query<CheckpointRow>(
          `SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq > $1 ORDER BY seq DESC LIMIT 1`,
          [headSeq.toString()],
        );
        const beyond = rows[0]
          ? fromRow(this.options.service, rows[0])
          : last && last.seq > headSeq
            ? last
            : undefined;
        const gone = headSeq + 1n;
        if (beyond) {
          const why = verdict(beyond);
          if (why) return untrustedProblem(beyond, gone, why);
          return {
            seq: gone,
            problem:
              `truncated: the ${describeCheckpoint(beyond)} covers records up to ${beyond.seq}, but the log ends at ` +
              `${headSeq}: records ${gone}-${beyond.seq} were removed`,
          };
        }
        if (last) {
          const kept = await this.pool.query("SELECT 1 FROM audit_checkpoints WHERE id = $1", [last.id]);
          if (kept.rowCount === 0) {
            return {
              seq: last.fromSeq + 1n,
              problem: `checkpoints removed: the ${describeCheckpoint(last)} by this process is no longer in audit_checkpoints`,
            };
          }
        }
        return undefined;
      },
    };
  }
}
