// Calling RPCs when the answer, not the payload, is what a test is about.
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";

/** "ok", or the code the call failed with. */
export type Outcome = "ok" | Code;

export async function codeOf(call: Promise<unknown> | (() => Promise<unknown>)): Promise<Outcome> {
  try {
    await (typeof call === "function" ? call() : call);
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

/** The error a call failed with; throws if it succeeded. */
export async function refusalOf(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call succeeded but should have been refused");
}

/** Reads a server stream to its end and returns every message. */
export async function drain<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const message of stream) out.push(message);
  return out;
}

export const describeOutcome = (o: Outcome) => (o === "ok" ? "ok" : Code[o]);

// Client streams that send nothing and end at once: the authorization decision comes before any
// message is read.
async function* nothing(): AsyncGenerator<never> {}

/**
 * Calls any method of a client with an empty request, whatever its kind, and returns the first answer:
 * the unary response or first streamed message ("ok"), or the error. Streams are cut after the first
 * message or when `signal` aborts (an abort counts as "ok": the call was admitted and kept open).
 */
export async function callEmpty(
  client: Client<never>,
  method: DescMethod,
  signal: AbortSignal,
): Promise<{ outcome: Outcome; message: string }> {
  const fn = (client as unknown as Record<string, (req: unknown, opts: unknown) => unknown>)[
    method.localName
  ]!;
  const options = { signal, timeoutMs: 0 };
  try {
    switch (method.methodKind) {
      case "unary":
        await (fn({}, options) as Promise<unknown>);
        return { outcome: "ok", message: "" };
      case "client_streaming":
        await (fn(nothing(), options) as Promise<unknown>);
        return { outcome: "ok", message: "" };
      default: {
        const input = method.methodKind === "server_streaming" ? {} : nothing();
        for await (const _ of fn(input, options) as AsyncIterable<unknown>) break;
        return { outcome: "ok", message: "" };
      }
    }
  } catch (err) {
    const error = ConnectError.from(err);
    if (signal.aborted) return { outcome: "ok", message: "kept open until cut by the test" };
    return { outcome: error.code, message: error.rawMessage };
  }
}
