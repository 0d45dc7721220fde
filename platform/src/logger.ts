import { trace } from "@opentelemetry/api";
import { pino, type DestinationStream, type Logger } from "pino";

export type { Logger };

/**
 * Paths whose values never reach a log line. Anything holding a token, PIN, secret or key is censored
 * wherever it sits, one or two levels deep (log objects are kept shallow on purpose).
 */
export const REDACTED_KEYS = [
  "token",
  "secret",
  "pin",
  "password",
  "passphrase",
  "privateKey",
  "privateKeyPem",
  "key",
  "keyPem",
  "authorization",
  "cookie",
] as const;

const REDACT_PATHS = REDACTED_KEYS.flatMap((k) => [k, `*.${k}`, `*.*.${k}`]);

export interface LoggerOptions {
  service: string;
  level?: string;
  destination?: DestinationStream;
}

/** pino JSON logs with the service name, and the trace id of the active span when there is one. */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level ?? "info",
      base: { service: options.service, pid: process.pid },
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      timestamp: pino.stdTimeFunctions.isoTime,
      mixin() {
        const ctx = trace.getActiveSpan()?.spanContext();
        return ctx ? { traceId: ctx.traceId, spanId: ctx.spanId } : {};
      },
    },
    options.destination,
  );
}
