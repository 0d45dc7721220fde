import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Domain errors. Services throw these; the one mapper below turns them into ConnectError codes
 * (DESIGN.md, Errors). Messages say what to do and never carry secrets.
 */
export type FabricErrorKind =
  | "unauthenticated" // no, bad, expired or revoked client certificate
  | "permission-denied" // wrong principal kind, role or organization
  | "failed-precondition" // used token, expired identity, wrong state
  | "aborted" // lost a race with a concurrent request for the same thing; retry
  | "invalid-argument" // malformed input
  | "not-found"
  | "already-exists"
  | "resource-exhausted" // rate limit
  | "unavailable" // dependency or authority down
  | "deadline-exceeded"
  | "internal";

const CODES: Record<FabricErrorKind, Code> = {
  unauthenticated: Code.Unauthenticated,
  "permission-denied": Code.PermissionDenied,
  "failed-precondition": Code.FailedPrecondition,
  aborted: Code.Aborted,
  "invalid-argument": Code.InvalidArgument,
  "not-found": Code.NotFound,
  "already-exists": Code.AlreadyExists,
  "resource-exhausted": Code.ResourceExhausted,
  unavailable: Code.Unavailable,
  "deadline-exceeded": Code.DeadlineExceeded,
  internal: Code.Internal,
};

export class FabricError extends Error {
  constructor(
    readonly kind: FabricErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "FabricError";
  }
}

export const unauthenticated = (message: string) => new FabricError("unauthenticated", message);
export const permissionDenied = (message: string) => new FabricError("permission-denied", message);
export const failedPrecondition = (message: string) => new FabricError("failed-precondition", message);
export const aborted = (message: string) => new FabricError("aborted", message);
export const invalidArgument = (message: string) => new FabricError("invalid-argument", message);
export const notFound = (message: string) => new FabricError("not-found", message);
export const alreadyExists = (message: string) => new FabricError("already-exists", message);
export const resourceExhausted = (message: string) => new FabricError("resource-exhausted", message);
export const unavailable = (message: string) => new FabricError("unavailable", message);

// Postgres SQLSTATEs that mean "the authority cannot take writes right now".
const PG_UNAVAILABLE = new Set([
  "25006",
  "57P01",
  "57P02",
  "57P03",
  "08000",
  "08003",
  "08006",
  "08001",
  "08004",
]);
const NODE_NET_ERRORS = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND"]);
// node-postgres reports a lost or unobtainable connection with these messages and no SQLSTATE.
const PG_CONNECTION_LOST = /Connection terminated|timeout exceeded when trying to connect|not queryable/;

/**
 * The one error mapper: any thrown value → ConnectError. Unknown errors become Internal with a generic
 * message (the detail goes to the log, not to the caller).
 */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof FabricError) return new ConnectError(err.message, CODES[err.kind]);
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "string" && PG_UNAVAILABLE.has(code)) {
    return new ConnectError(
      code === "25006"
        ? "the database is read-only (a replica?): this service cannot take changes now; retry against the primary"
        : "the database is unavailable; retry shortly",
      Code.Unavailable,
    );
  }
  // Class 22 (data exception): a value the caller sent that Postgres cannot store, such as a NUL character
  // in text or an out-of-range number. Validation should catch these first; this keeps any it misses a
  // refusal rather than a fault.
  if (typeof code === "string" && code.startsWith("22")) {
    return new ConnectError(
      "the request holds a value that cannot be stored (a NUL character, invalid text or an out-of-range number); fix the input",
      Code.InvalidArgument,
    );
  }
  if (err instanceof Error && PG_CONNECTION_LOST.test(err.message)) {
    return new ConnectError("the database is unavailable; retry shortly", Code.Unavailable);
  }
  if (typeof code === "string" && NODE_NET_ERRORS.has(code)) {
    return new ConnectError("a dependency is unreachable; retry shortly", Code.Unavailable);
  }
  return new ConnectError("internal error; the server log has the details", Code.Internal);
}

/** True when the mapped error is one the caller caused (not worth an error-level log line). */
export function isClientError(err: ConnectError): boolean {
  return ![Code.Internal, Code.Unknown, Code.DataLoss, Code.Unavailable].includes(err.code);
}
