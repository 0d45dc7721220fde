import type { DescMethod, Message, Registry } from "@bufbuild/protobuf";
import type { CallOptions } from "@connectrpc/connect";
import type { CommandContext } from "../command.js";
import { readNdjson } from "./ndjson.js";
import { printMessage, printStreamMessage } from "./render.js";
import { buildRequest, JSON_FLAG, type FieldFlag } from "./request-flags.js";

type AnyCall = (input: unknown, options?: CallOptions) => unknown;

/**
 * Calls one RPC as a generated command: the request from flags (or, for client-streaming and bidi RPCs,
 * from NDJSON on stdin after an optional first message made of the flags), responses printed as they
 * arrive. Unary calls keep the client's deadline (--timeout, default 30 s); streams have none unless
 * --timeout is given, since a watch is meant to stay open.
 */
export async function callRpc(
  ctx: CommandContext,
  registry: Registry,
  group: string,
  method: DescMethod,
  flags: FieldFlag[],
): Promise<void> {
  const streamTimeout: CallOptions = { timeoutMs: ctx.session.options.timeoutMs ?? 0 };
  const request = () => buildRequest(method.input, flags, ctx.flags, registry);
  // A bad stdin line fails the request stream; the client reports that as a generic stream error, so
  // the original (a usage error naming the line) is kept and reported instead.
  let inputError: unknown;
  const requests = async function* (): AsyncGenerator<Message> {
    try {
      const fromFlags = [...flags, JSON_FLAG].some((f) => ctx.flags[f.name] !== undefined);
      if (fromFlags) yield request();
      yield* readNdjson(ctx.io.stdin, method.input, registry);
    } catch (err) {
      inputError = err;
      throw err;
    }
  };
  const first =
    method.methodKind === "unary" || method.methodKind === "server_streaming" ? request() : undefined;
  const client = ctx.session.client(method.parent, group) as unknown as Record<string, AnyCall>;
  const call = client[method.localName]!;
  const printOne = (res: unknown) => printMessage(ctx.output, method.output, res as Message, registry);
  const printEach = async (stream: unknown) => {
    for await (const res of stream as AsyncIterable<Message>) {
      printStreamMessage(ctx.output, method.output, res, registry);
    }
  };
  try {
    switch (method.methodKind) {
      case "unary":
        return printOne(await call(first));
      case "server_streaming":
        return await printEach(call(first, streamTimeout));
      case "client_streaming":
        return printOne(await call(requests(), streamTimeout));
      case "bidi_streaming":
        return await printEach(call(requests(), streamTimeout));
    }
  } catch (err) {
    throw inputError ?? err;
  }
}
