// The `fabric` process entry (run through bin/fabric.mjs, or `node --import tsx cli/src/main.ts`).
import { runCli } from "./run.js";

// `fabric ... | head` closes stdout early; that is not an error worth a stack trace.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});

const code = await runCli(process.argv.slice(2), {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
  get stdin() {
    return process.stdin;
  },
  stdoutIsTty: process.stdout.isTTY === true,
  env: process.env,
});

// Exit explicitly once the output is flushed: idle HTTP/2 sessions of the RPC client would otherwise keep
// the process alive.
const flush = (stream: NodeJS.WriteStream) =>
  new Promise<void>((resolve) => stream.write("", () => resolve()));
await Promise.all([flush(process.stdout), flush(process.stderr)]);
process.exit(code);
