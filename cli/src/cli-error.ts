import { EXIT, type ExitCode } from "./exit-codes.js";

/**
 * A failure the CLI reports and exits on: what went wrong, what to do about it, and the exit code.
 * Messages never carry secrets (tokens, PINs, keys) — flag values are only echoed for typed fields
 * (numbers, enums, durations, times), never for free strings.
 */
export class CliError extends Error {
  constructor(
    readonly exitCode: ExitCode,
    message: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = "CliError";
  }
}

/** Bad command line, flag value or configuration (exit 2). */
export const usageError = (message: string, hint?: string) => new CliError(EXIT.usage, message, hint);
