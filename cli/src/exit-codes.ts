import { Code } from "@connectrpc/connect";

/**
 * The CLI's exit codes: scripts branch on these, so they are part of the interface (printed by
 * `fabric --help` and listed in cli/README.md; a test keeps the two in step).
 */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  refused: 3,
  notFound: 4,
  unavailable: 5,
  precondition: 6,
  exhausted: 7,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** What each exit code means, in the order shown by `fabric --help`. */
export const EXIT_CODE_HELP: readonly (readonly [ExitCode, string])[] = [
  [EXIT.ok, "success"],
  [EXIT.failure, "any other failure: Internal, Unknown, DataLoss, Canceled, ..."],
  [
    EXIT.usage,
    "usage or configuration error: unknown command or flag, bad value, InvalidArgument, OutOfRange",
  ],
  [EXIT.refused, "identity refused or missing: Unauthenticated, PermissionDenied, expired identity"],
  [EXIT.notFound, "NotFound"],
  [
    EXIT.unavailable,
    "service unreachable, too slow or not trusted: Unavailable, DeadlineExceeded, TLS check failed",
  ],
  [EXIT.precondition, "wrong state: FailedPrecondition, AlreadyExists, Aborted"],
  [EXIT.exhausted, "rate limited: ResourceExhausted"],
];

/** The exit code for a gRPC status code. */
export function exitCodeOf(code: Code): ExitCode {
  switch (code) {
    case Code.InvalidArgument:
    case Code.OutOfRange:
      return EXIT.usage;
    case Code.Unauthenticated:
    case Code.PermissionDenied:
      return EXIT.refused;
    case Code.NotFound:
      return EXIT.notFound;
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return EXIT.unavailable;
    case Code.FailedPrecondition:
    case Code.AlreadyExists:
    case Code.Aborted:
      return EXIT.precondition;
    case Code.ResourceExhausted:
      return EXIT.exhausted;
    default:
      return EXIT.failure;
  }
}
