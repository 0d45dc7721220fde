import { Worker } from "node:worker_threads";
import type { BatchOutcome, BatchWriter, IssuanceEntry } from "./issuance-log.js";

export interface RecorderOptions {
  databaseUrl: string;
  schema: string;
  /** Connections of the recorder's own pool: one per batch in flight. */
  connections: number;
}

export interface RecordJob {
  id: number;
  entries: IssuanceEntry[];
}

export type RecordReply =
  | { id: number; serials: string[]; compromised: string[]; error?: undefined }
  | { id: number; error: { message: string; code?: string }; serials?: undefined };

const RECORDER_GONE = () => new Error("the CA's issuance recorder thread exited");

interface Pending {
  resolve: (outcome: BatchOutcome) => void;
  reject: (err: unknown) => void;
}

/**
 * The group commit's transactions, on a thread of their own (the same statements, transaction and audit
 * chain as writeIssuances on the main pool). A batch takes six round trips to Postgres (BEGIN, INSERT,
 * audit head lock, audit INSERT, head UPDATE, COMMIT); on the main thread each answer waited for the event
 * loop to come round between RPCs, so under load a commit took tens of milliseconds and held every Sign
 * of its batch that long. This thread's loop is idle and reads each answer at once.
 */
export class IssuanceRecorder {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private exited = false;

  private constructor(private readonly worker: Worker) {
    worker.on("message", (reply: RecordReply) => this.settle(reply));
    // The recorder only dies on a bug: fail what it held, and every batch posted after.
    worker.once("exit", () => {
      this.exited = true;
      for (const p of this.pending.values()) p.reject(RECORDER_GONE());
      this.pending.clear();
    });
  }

  static async start(options: RecorderOptions): Promise<IssuanceRecorder> {
    const worker = new Worker(new URL("./issuance-recorder-worker.mjs", import.meta.url), {
      workerData: options,
    });
    await new Promise<void>((resolve, reject) => {
      worker.once("message", () => resolve());
      worker.once("error", reject);
    });
    return new IssuanceRecorder(worker);
  }

  readonly write: BatchWriter = (entries) =>
    new Promise((resolve, reject) => {
      if (this.exited) return reject(RECORDER_GONE());
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, entries } satisfies RecordJob);
    });

  /** Ends the recorder's pool and thread; call after the log has drained. */
  async close(): Promise<void> {
    const exited = new Promise((resolve) => this.worker.once("exit", resolve));
    this.worker.postMessage("close");
    await exited;
  }

  private settle(reply: RecordReply): void {
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    if (reply.error) {
      // The error mapper reads `code` (SQLSTATE or errno) to tell an unavailable database from a fault.
      p.reject(Object.assign(new Error(reply.error.message), { code: reply.error.code }));
    } else {
      p.resolve({ inserted: new Set(reply.serials), compromised: new Set(reply.compromised) });
    }
  }
}
