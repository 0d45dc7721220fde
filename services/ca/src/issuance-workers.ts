import { Worker } from "node:worker_threads";
import { FabricError, type FabricErrorKind, type IdentityClaims } from "@fabric/platform";
import { verifyCsrPem } from "./csr-verifier.js";
import type { LeafIssuer, LeafIssuerOptions, LeafSummary } from "./leaf-issuer.js";

/** One Sign's CPU work: verify the CSR, build and sign the certificate. */
export interface IssueJob {
  id: number;
  csrPem: string;
  claims: IdentityClaims;
  notBefore: number;
  notAfter: number;
  dnsNames: string[];
  ipAddresses: string[];
}

type WireLeaf = Omit<LeafSummary, "notBefore" | "notAfter"> & { notBefore: number; notAfter: number };

export type IssueReply =
  | { id: number; leaf: WireLeaf; error?: undefined }
  | { id: number; error: { kind: FabricErrorKind; message: string }; leaf?: undefined };

interface Pending {
  resolve: (leaf: LeafSummary) => void;
  reject: (err: unknown) => void;
}

interface Slot {
  worker: Worker;
  /** Jobs posted to this worker and not answered yet. */
  jobs: Map<number, Pending>;
  /** Jobs gathered this turn of the event loop, posted together. */
  outbox: IssueJob[];
}

/**
 * CSR verification and signing on worker threads. On this path one certificate costs about 250 µs of
 * CPU (key import ~70-110 µs, ECDSA verify ~65 µs, sign ~30 µs, encoding): on the main thread that
 * would starve the RPC layer and delay every database round trip of the group commit. Jobs are sent
 * to the least busy worker, batched per event-loop turn to keep messaging overhead low. With zero
 * workers (one core) the work runs inline.
 */
export class IssuanceWorkers {
  private nextId = 1;
  private flushScheduled = false;

  private constructor(
    private readonly slots: Slot[],
    private readonly inline: LeafIssuer,
  ) {
    for (const slot of slots) {
      slot.worker.on("message", (replies: IssueReply[]) => {
        for (const reply of replies) this.settle(slot, reply);
      });
      // A worker only dies on a bug: fail its jobs and keep issuing on the others (or inline).
      slot.worker.once("exit", () => {
        this.slots.splice(this.slots.indexOf(slot), 1);
        for (const p of slot.jobs.values()) p.reject(new Error("a CA issuance worker exited"));
        slot.jobs.clear();
      });
    }
  }

  static async start(
    count: number,
    options: LeafIssuerOptions,
    inline: LeafIssuer,
  ): Promise<IssuanceWorkers> {
    const slots = await Promise.all(
      Array.from({ length: count }, async () => {
        const worker = new Worker(new URL("./issuance-worker.mjs", import.meta.url), { workerData: options });
        await new Promise<void>((resolve, reject) => {
          worker.once("message", () => resolve());
          worker.once("error", reject);
        });
        worker.unref();
        return { worker, jobs: new Map<number, Pending>(), outbox: [] as IssueJob[] };
      }),
    );
    return new IssuanceWorkers(slots, inline);
  }

  issue(job: Omit<IssueJob, "id">): Promise<LeafSummary> {
    if (this.slots.length === 0) {
      const { spki } = verifyCsrPem(job.csrPem);
      return Promise.resolve(
        this.inline.issue({
          ...job,
          spki,
          notBefore: new Date(job.notBefore),
          notAfter: new Date(job.notAfter),
        }),
      );
    }
    const id = this.nextId++;
    const slot = this.slots.reduce((a, b) => (b.jobs.size < a.jobs.size ? b : a));
    slot.outbox.push({ ...job, id });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    return new Promise((resolve, reject) => slot.jobs.set(id, { resolve, reject }));
  }

  async close(): Promise<void> {
    await Promise.all([...this.slots].map((s) => s.worker.terminate()));
  }

  private flush(): void {
    this.flushScheduled = false;
    for (const slot of this.slots) {
      if (slot.outbox.length === 0) continue;
      slot.worker.postMessage(slot.outbox);
      slot.outbox = [];
    }
  }

  private settle(slot: Slot, reply: IssueReply): void {
    const p = slot.jobs.get(reply.id);
    if (!p) return;
    slot.jobs.delete(reply.id);
    if (reply.error) {
      p.reject(
        reply.error.kind === "internal"
          ? new Error(reply.error.message)
          : new FabricError(reply.error.kind, reply.error.message),
      );
      return;
    }
    const leaf = reply.leaf;
    p.resolve({ ...leaf, notBefore: new Date(leaf.notBefore), notAfter: new Date(leaf.notAfter) });
  }
}
