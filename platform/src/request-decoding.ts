import { fromBinary, type DescMessage } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  createAsyncIterable,
  readAllBytes,
  type UniversalHandler,
  type UniversalServerRequest,
} from "@connectrpc/connect/protocol";

// connect-es answers a request message that does not decode as protobuf with Internal ("parse binary: ..."),
// hard-coded in its serializer, and for unary methods it decodes before any interceptor could map it. A
// message that does not decode is the caller's mistake, so it must get InvalidArgument (and the server's
// error log must not fill with a hostile client's garbage).

/** Largest request message a Fabric service reads (connect's readMaxBytes). */
export const READ_MAX_BYTES = 4 * 1024 * 1024;

const PARSE_FAILURE = "parse binary: ";

/**
 * Wraps a unary method's handler so a binary request body is decoded once up front; one that does not
 * decode is refused as InvalidArgument through connect's own error path (so each protocol frames the
 * refusal its way), and one that does is handed on unchanged. Streaming methods decode inside the
 * interceptors, where `undecodableRequest` maps the same failure.
 */
export function refuseUndecodable(handler: UniversalHandler): UniversalHandler {
  if (handler.method.methodKind !== "unary") return handler;
  const input = handler.method.input;
  const wrapped = async (req: UniversalServerRequest) => {
    const framing = binaryFraming(req);
    if (!framing || !(Symbol.asyncIterator in Object(req.body))) return handler(req);
    let body: Uint8Array;
    try {
      body = await readAllBytes(req.body as AsyncIterable<Uint8Array>, READ_MAX_BYTES);
    } catch (err) {
      return handler({ ...req, body: failing(ConnectError.from(err)) });
    }
    const problem = undecodable(input, body, framing);
    return handler({ ...req, body: problem ? failing(problem) : createAsyncIterable([body]) });
  };
  return Object.assign(wrapped, handler);
}

/** A request body whose reading fails with `err`: connect turns that into the protocol's error reply. */
function failing(err: ConnectError): AsyncIterable<Uint8Array> {
  return { [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(err) }) };
}

/** InvalidArgument for a request message connect failed to decode, or undefined for any other error. */
export function undecodableRequest(err: unknown): ConnectError | undefined {
  if (err instanceof ConnectError && err.code === Code.Internal && err.rawMessage.startsWith(PARSE_FAILURE)) {
    return invalidMessage(err.rawMessage.slice(PARSE_FAILURE.length));
  }
  return undefined;
}

function invalidMessage(detail: string): ConnectError {
  return new ConnectError(`the request message is not valid protobuf: ${detail}`, Code.InvalidArgument);
}

/** How a binary request body carries its message: gRPC-style envelopes, or bare (Connect unary). */
function binaryFraming(req: UniversalServerRequest): "enveloped" | "bare" | undefined {
  if (req.method !== "POST") return undefined;
  const type = req.header.get("content-type")?.split(";")[0]?.trim().toLowerCase();
  switch (type) {
    case "application/grpc":
    case "application/grpc+proto":
    case "application/grpc-web":
    case "application/grpc-web+proto":
      return "enveloped";
    case "application/proto":
      return "bare";
    default:
      return undefined; // JSON (whose parse errors connect already calls InvalidArgument), grpc-web-text
  }
}

/**
 * Why the body's message does not decode, or undefined when it does or when the envelope itself is
 * malformed or compressed (connect refuses those precisely on its own).
 */
function undecodable(
  input: DescMessage,
  body: Uint8Array,
  framing: "enveloped" | "bare",
): ConnectError | undefined {
  let message = body;
  if (framing === "enveloped") {
    if (body.length < 5 || body[0] !== 0) return undefined;
    const length = Buffer.from(body.buffer, body.byteOffset, body.byteLength).readUInt32BE(1);
    if (body.length !== 5 + length) return undefined;
    message = body.subarray(5);
  }
  try {
    fromBinary(input, message);
    return undefined;
  } catch (err) {
    return invalidMessage(err instanceof Error ? err.message : String(err));
  }
}
