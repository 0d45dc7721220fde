import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "./logger.js";

const PING_TIMED_OUT = "PING timed out";

/**
 * connect-node destroys an HTTP/2 connection whose keepalive PING went unanswered (an overloaded or
 * vanished server) with an error that, when it races the session manager taking its listeners off, is
 * emitted with nobody listening, and would end the process. The calls on that connection fail on their
 * own (Unavailable) and are retried like any other outage, so a process that keeps long-lived clients (an
 * agent, a service) logs it and carries on. Any other uncaught exception still ends the process, with
 * its stack on stderr and exit code 1, as Node would.
 */
export function survivePingTimeouts(logger: Logger): void {
  process.on("uncaughtException", (err) => {
    if (err instanceof ConnectError && err.code === Code.Unavailable && err.rawMessage === PING_TIMED_OUT) {
      logger.warn(
        "an HTTP/2 connection stopped answering keepalive PINGs and was closed; its calls are retried",
      );
      return;
    }
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
