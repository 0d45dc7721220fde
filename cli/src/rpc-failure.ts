import { Code, type ConnectError } from "@connectrpc/connect";
import { CliError } from "./cli-error.js";
import { EXIT, exitCodeOf } from "./exit-codes.js";
import type { Session } from "./session.js";

/**
 * Turns a failed call into what the user reads: the gRPC code, the server's message (which already says
 * what was wrong) and what to do next, with the exit code for that code.
 */
export function rpcFailure(err: ConnectError, session: Session, commandPath: string[]): CliError {
  const message = `${Code[err.code]}: ${err.rawMessage}`;
  const target = session.lastTarget;
  const where = target ? `the server at ${target.url}` : "the server";
  // Failures of our own TLS checks of the server surface as Internal/Unknown; they mean "not reachable as
  // the right service", so they exit like Unavailable.
  if (/, expected spiffe:\/\//.test(err.rawMessage)) {
    return new CliError(
      EXIT.unavailable,
      message,
      `${where} is not the ${target?.group ?? "expected"} service: check the URL (\`fabric context ls\`) or --server`,
    );
  }
  if (SERVER_CERTIFICATE_UNTRUSTED.test(err.rawMessage)) {
    return new CliError(
      EXIT.unavailable,
      message,
      `${where} presented a certificate your identity's ca.pem does not trust: check the URL, and that ` +
        "the context's identity belongs to the same Fabric",
    );
  }
  return new CliError(exitCodeOf(err.code), message, adviceFor(err.code, session, commandPath));
}

// node:tls verification errors about the server's certificate chain.
const SERVER_CERTIFICATE_UNTRUSTED =
  /unable to (get local issuer|get issuer|verify the first) certificate|self[- ]signed certificate|certificate has expired|certificate is not yet valid/;

function adviceFor(code: Code, session: Session, commandPath: string[]): string {
  const target = session.lastTarget;
  switch (code) {
    case Code.Unauthenticated:
      return `your identity was refused: run \`fabric whoami\`; if it has expired or was revoked, re-onboard: ${session.reonboardCommand()}`;
    case Code.PermissionDenied:
      return (
        "your identity may not do this: check its kind, grant, cluster and organization with `fabric whoami`, " +
        "ask an admin for the access you need, or use a context with another identity (`fabric context ls`)"
      );
    case Code.NotFound:
      return "check the id you passed; the list commands (`fabric <service> list-...`) show what exists";
    case Code.InvalidArgument:
    case Code.OutOfRange:
      return `fix the request as the message says; \`fabric ${commandPath.join(" ")} --help\` describes every flag`;
    case Code.FailedPrecondition:
      return "the target is not in a state that allows this (the message says which): check its current state first";
    case Code.AlreadyExists:
      return "it already exists: pick another id, or fetch the existing one";
    case Code.Aborted:
      return "the change collided with a concurrent one: retry";
    case Code.ResourceExhausted:
      return "rate limited: wait a little, then retry";
    case Code.Unavailable:
      return target
        ? `could not get an answer from the ${target.group} service at ${target.url}: is it running there? ` +
            "Check the URL (`fabric context ls`) or pass --server"
        : "the service is unreachable: check that it is running and the URL";
    case Code.DeadlineExceeded:
      return "no answer before the deadline: retry, or allow more time with --timeout";
    case Code.Canceled:
      return (
        "the server closed the connection. If every call ends like this it is refusing your certificate " +
        `(not from its CA, expired or revoked): check it with \`fabric whoami\`; re-onboard: ${session.reonboardCommand()}`
      );
    default:
      return "the server failed; its log has the details (look for this call's RPC name)";
  }
}
