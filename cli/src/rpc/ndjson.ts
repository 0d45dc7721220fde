import { createInterface } from "node:readline";
import { fromJson, type DescMessage, type JsonValue, type Message, type Registry } from "@bufbuild/protobuf";
import { usageError } from "../cli-error.js";
import { withoutValues } from "./request-flags.js";

const ONE_PER_LINE = "give one JSON object per line with the request message's fields (proto JSON)";

/**
 * Request messages for client-streaming and bidi RPCs: one proto JSON document per line of stdin
 * (blank lines skipped), yielded as they are read, so a pipe can feed a long-lived stream. A line that
 * does not decode stops the command with a usage error naming the line.
 */
export async function* readNdjson(
  input: NodeJS.ReadableStream,
  desc: DescMessage,
  registry: Registry,
): AsyncGenerator<Message> {
  let lineNumber = 0;
  for await (const line of createInterface({ input, crlfDelay: Infinity })) {
    lineNumber++;
    if (line.trim() === "") continue;
    let json: JsonValue;
    try {
      json = JSON.parse(line) as JsonValue;
    } catch {
      // The line itself is never echoed: it may carry secrets.
      throw usageError(`stdin line ${lineNumber} is not valid JSON`, ONE_PER_LINE);
    }
    let message: Message;
    try {
      message = fromJson(desc, json, { registry });
    } catch (err) {
      throw usageError(
        `stdin line ${lineNumber} is not a ${desc.typeName}: ${withoutValues((err as Error).message)}`,
        ONE_PER_LINE,
      );
    }
    yield message;
  }
}
