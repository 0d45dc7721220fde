import type { DescMethod } from "@bufbuild/protobuf";
import type { Command, Group } from "../command.js";
import { GLOBAL_FLAG_NAMES } from "../global-flags.js";
import { callRpc } from "./call.js";
import { commentOf, firstSentence } from "./comments.js";
import { kebabCase, type Contracts } from "./contracts.js";
import { fieldFlags, JSON_FLAG } from "./request-flags.js";

const TAKEN_FLAGS: ReadonlySet<string> = new Set([...GLOBAL_FLAG_NAMES, JSON_FLAG.name]);

/**
 * The generated layer: one group per Fabric service and one command per RPC, `fabric <service>
 * <method-in-kebab-case>`, with a flag per request field and help from the proto comments. Nothing here
 * names a service, method or field: a new RPC in a .proto becomes a command on `npm run generate`.
 */
export function rpcCommands(contracts: Contracts): { groups: Group[]; commands: Command[] } {
  const groups: Group[] = [];
  const commands: Command[] = [];
  for (const { group, service } of contracts.services) {
    const comment = commentOf(service);
    groups.push({
      path: [group],
      summary: firstSentence(comment) || service.typeName,
      help: `${comment}\n\nGenerated from ${service.typeName}: one command per RPC.`.trim(),
      section: "services",
    });
    for (const method of service.methods) {
      const flags = fieldFlags(method.input, TAKEN_FLAGS);
      commands.push({
        path: [group, kebabCase(method.name)],
        summary: firstSentence(commentOf(method)) || `${method.name} RPC`,
        help: [commentOf(method), streamingNote(method), `RPC ${service.typeName}/${method.name}.`]
          .filter((p) => p !== "")
          .join("\n\n"),
        flags: [...flags, JSON_FLAG],
        identity: "check",
        server: group,
        run: (ctx) => callRpc(ctx, contracts.registry, group, method, flags),
      });
    }
  }
  return { groups, commands };
}

function streamingNote(method: DescMethod): string {
  const fromStdin =
    "Requests are read from stdin, one proto JSON object per line, until it ends; flags or --json, " +
    "when given, make the first request.";
  const printed =
    "Responses are printed as they arrive (one JSON document per line with -o json); there is no " +
    "deadline unless --timeout is given.";
  switch (method.methodKind) {
    case "server_streaming":
      return `Server stream. ${printed}`;
    case "client_streaming":
      return `Client stream. ${fromStdin}`;
    case "bidi_streaming":
      return `Bidirectional stream. ${fromStdin} ${printed}`;
    default:
      return "";
  }
}
