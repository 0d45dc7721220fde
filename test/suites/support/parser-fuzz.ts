// Fuzzes one of Fabric's parsers of untrusted input in a worker thread, watched from the main thread so a
// hang is caught with the input that caused it:
//
//   node --import tsx parser-fuzz.ts <ca-csr|platform-csr|join-token> <seconds> <seed> [record-file]
//
// With a record file, each input is written there before it is parsed, so an input that kills the
// process outright (a native abort, which no JavaScript can report) is left on disk.
//
// Prints one JSON line: {"inputs", "accepted", "refused", "seconds", "seedsPerSecond"} and exits 0, or
// {"unexpected": "...", "input": "<base64>"} (a crash or a refusal that is not InvalidArgument) and exits 1,
// or {"hang": ms, "input": "<base64>"} and exits 2.
import { writeFileSync } from "node:fs";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { CsrError, FabricError, toPem, verifyCsr, x509 } from "@fabric/platform";
import { verifyCsrPem } from "../../../services/ca/src/csr-verifier.js";
import { parseJoinToken } from "../../../services/enrollment/src/join-tokens.js";
import { mutateBytes, mutateText } from "./mutations.js";
import { SEED_CSRS } from "./seed-csrs.js";
import { Prng } from "./prng.js";

export type ParserTarget = "ca-csr" | "platform-csr" | "join-token";

/** Longest one input may take before the run counts as hung. */
const HANG_MS = 15_000;
// Shared with the watchdog: [0] = inputs done, [1] = length of the current input; then its bytes.
const MAX_INPUT = 64 * 1024;

interface Job {
  target: ParserTarget;
  seconds: number;
  seed: number;
  shared: SharedArrayBuffer;
  /** File the current input is written to before it is parsed. */
  record: string | undefined;
}

/** What a parser may answer for bad input: only the error its callers turn into InvalidArgument. */
const REFUSALS: Record<ParserTarget, (err: unknown) => boolean> = {
  "ca-csr": (err) => err instanceof FabricError && err.kind === "invalid-argument",
  "platform-csr": (err) => err instanceof CsrError,
  "join-token": (err) => err instanceof FabricError && err.kind === "invalid-argument",
};

function seedsFor(target: ParserTarget): readonly string[] {
  if (target === "join-token") {
    return [
      `0123456789abcdef.${Buffer.alloc(32, 1).toString("base64url")}`,
      `fedcba9876543210.${Buffer.alloc(32, 255).toString("base64url")}`,
      "0123456789abcdef.",
      ".",
    ];
  }
  return SEED_CSRS;
}

/** A fresh input: a mutation of a seed (as text, or its DER re-wrapped as PEM), or random junk. */
function nextInput(target: ParserTarget, seeds: readonly string[], prng: Prng): string {
  const seed = prng.pick(seeds);
  const roll = prng.int(10);
  if (roll === 0) return prng.bytes(prng.int(2_048)).toString(prng.chance(0.5) ? "latin1" : "base64");
  if (target !== "join-token" && roll < 6) {
    const der = Buffer.from(new x509.Pkcs10CertificateRequest(seed).rawData);
    let mutated = mutateBytes(
      der,
      prng,
      Buffer.from(new x509.Pkcs10CertificateRequest(prng.pick(seeds)).rawData),
    );
    for (let n = prng.int(3); n > 0; n--) mutated = mutateBytes(mutated, prng);
    return toPem(mutated, "CERTIFICATE REQUEST");
  }
  let text = mutateText(seed, prng);
  for (let n = prng.int(3); n > 0; n--) text = mutateText(text, prng);
  return text;
}

async function fuzz(job: Job): Promise<void> {
  const prng = new Prng(job.seed);
  const seeds = seedsFor(job.target);
  const progress = new Int32Array(job.shared, 0, 2);
  const current = new Uint8Array(job.shared, 8);
  const refused = REFUSALS[job.target];
  const parse = async (input: string): Promise<unknown> => {
    switch (job.target) {
      case "ca-csr":
        return verifyCsrPem(input);
      case "platform-csr":
        return verifyCsr(input);
      case "join-token":
        return parseJoinToken(input);
    }
  };
  const stats = { inputs: 0, accepted: 0, refused: 0, seconds: 0, seedsPerSecond: 0 };
  // The watchdog starts now: compiling and making seed keys is not parsing.
  parentPort!.postMessage({ ready: true });
  // For the bench's ratio: the same parser on the unmutated seeds, for half a second.
  const calibrate = Date.now() + 500;
  let seedParses = 0;
  while (Date.now() < calibrate) {
    await parse(seeds[seedParses % seeds.length]!).catch(() => {});
    seedParses += 1;
    Atomics.store(progress, 0, -seedParses);
  }
  stats.seedsPerSecond = seedParses * 2;
  const started = Date.now();
  const end = Date.now() + job.seconds * 1_000;
  while (Date.now() < end) {
    const input = nextInput(job.target, seeds, prng);
    // An input that aborts the whole process (a native crash) leaves no one to report it: keep it on disk.
    if (job.record) writeFileSync(job.record, input);
    const bytes = Buffer.from(input, "utf8").subarray(0, MAX_INPUT - 8);
    current.set(bytes);
    Atomics.store(progress, 1, bytes.length);
    try {
      await parse(input);
      stats.accepted += 1;
    } catch (err) {
      if (!refused(err)) {
        parentPort!.postMessage({
          unexpected: `${(err as Error)?.name}: ${(err as Error)?.message}`,
          input: bytes.toString("base64"),
        });
        return;
      }
      stats.refused += 1;
    }
    stats.inputs += 1;
    Atomics.store(progress, 0, stats.inputs);
  }
  stats.seconds = (Date.now() - started) / 1_000;
  parentPort!.postMessage(stats);
}

function watch(target: ParserTarget, seconds: number, seed: number, record: string | undefined): void {
  const shared = new SharedArrayBuffer(MAX_INPUT);
  const progress = new Int32Array(shared, 0, 2);
  // Module hooks are per thread: the worker loads this file through tsx's API.
  const tsx = import.meta.resolve("tsx/esm/api");
  const bootstrap = `import(${JSON.stringify(tsx)}).then((t) => t.tsImport(${JSON.stringify(import.meta.url)}, ${JSON.stringify(import.meta.url)}))`;
  const worker = new Worker(bootstrap, { eval: true, workerData: { target, seconds, seed, shared, record } });
  let last = -1;
  let since = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const startWatching = () =>
    setInterval(() => {
      const done = Atomics.load(progress, 0);
      if (done !== last) {
        last = done;
        since = Date.now();
        return;
      }
      if (Date.now() - since > HANG_MS) {
        const length = Atomics.load(progress, 1);
        const input = Buffer.from(new Uint8Array(shared, 8, length)).toString("base64");
        process.stdout.write(`${JSON.stringify({ hang: Date.now() - since, input })}\n`);
        process.exit(2);
      }
    }, 250);
  worker.on("message", (result: Record<string, unknown>) => {
    if (result.ready) {
      since = Date.now();
      timer = startWatching();
      return;
    }
    clearInterval(timer);
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(result.unexpected ? 1 : 0);
  });
  worker.on("error", (err) => {
    clearInterval(timer);
    process.stdout.write(`${JSON.stringify({ unexpected: `worker crashed: ${err.message}`, input: "" })}\n`);
    process.exit(1);
  });
}

if (isMainThread) {
  const [target, seconds, seed, record] = process.argv.slice(2);
  watch(target as ParserTarget, Number(seconds), Number(seed), record);
} else {
  await fuzz(workerData as Job);
}
