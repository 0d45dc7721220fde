// The CA's issuance recorder thread: commits group-commit batches on a pool of its own, so Postgres's
// answers are read as they arrive instead of between RPCs (see issuance-recorder.ts).
import { parentPort, workerData } from "node:worker_threads";
import { createPool } from "@fabric/platform";
import { writeIssuances } from "./issuance-log.js";
import type { RecordJob, RecordReply, RecorderOptions } from "./issuance-recorder.js";

const options = workerData as RecorderOptions;
const pool = createPool({ url: options.databaseUrl, schema: options.schema, max: options.connections });
const write = writeIssuances(pool);

parentPort!.on("message", (job: RecordJob | "close") => {
  if (job === "close") {
    void pool.end().finally(() => parentPort!.close());
    return;
  }
  write(job.entries).then(
    (outcome) =>
      parentPort!.postMessage({
        id: job.id,
        serials: [...outcome.inserted],
        compromised: [...outcome.compromised],
      } satisfies RecordReply),
    (err: unknown) => {
      const { message, code } = err as { message?: unknown; code?: unknown };
      parentPort!.postMessage({
        id: job.id,
        error: { message: String(message ?? err), ...(typeof code === "string" ? { code } : {}) },
      } satisfies RecordReply);
    },
  );
});
parentPort!.postMessage("ready");
