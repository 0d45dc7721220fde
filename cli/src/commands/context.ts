import { join } from "node:path";
import type { Command, CommandContext } from "../command.js";
import type { ContextConfig } from "../config-file.js";
import { formatTable } from "../output.js";
import type { CommandModule } from "./module.js";

/** `fabric context ls|use|set`: the named contexts in $FABRIC_HOME/config.yaml. */
export const contextCommands: CommandModule = (contracts) => {
  const groups = contracts.services.map((s) => s.group);
  const ls: Command = {
    path: ["context", "ls"],
    summary: "Lists the contexts; the current one is marked with *.",
    help:
      "Lists the contexts in $FABRIC_HOME/config.yaml with their trust domain, identity and service URLs. " +
      "The current context (current-context, or --context) is marked with *.",
    flags: [],
    identity: "none",
    async run({ session, output }: CommandContext) {
      const config = session.config();
      const current = session.options.context ?? config.currentContext;
      const contexts = config.contextNames.map((name) => {
        const c = config.context(name)!;
        return {
          name,
          current: name === current,
          trustDomain: c["trust-domain"] ?? "",
          identity: c.identity ?? "",
          identityDir: c.identity ? join(session.home, "certs", c.identity) : "",
          servers: c.servers,
        };
      });
      output.print({ currentContext: current ?? null, contexts }, () =>
        contexts.length === 0
          ? `no contexts in ${config.path}; create one with \`fabric context set <name> ...\`\n`
          : formatTable(
              ["CURRENT", "NAME", "TRUST_DOMAIN", "IDENTITY", ...groups.map((g) => g.toUpperCase())],
              contexts.map((c) => [
                c.current ? "*" : "",
                c.name,
                c.trustDomain,
                c.identity,
                ...groups.map((g) => c.servers[g] ?? ""),
              ]),
            ),
      );
    },
  };

  const use: Command = {
    path: ["context", "use"],
    summary: "Makes a context the current one.",
    help: "Sets current-context in $FABRIC_HOME/config.yaml, so later commands use that context.",
    flags: [],
    args: [{ name: "name", help: "The context to use (see `fabric context ls`)." }],
    identity: "none",
    async run({ session, output, args }: CommandContext) {
      const name = args[0]!;
      session.config().use(name);
      output.print({ currentContext: name }, () => `now using context "${name}"\n`);
    },
  };

  const urlFlag = (group: string) => `${group}-url`;
  const set: Command = {
    path: ["context", "set"],
    summary: "Creates or updates a context.",
    help:
      "Creates the context or changes the settings given; others keep their values. The first context " +
      "created becomes the current one. Workflows that obtain an identity (`fabric dev init`, `fabric up`) " +
      "write their context the same way.",
    flags: [
      {
        name: "trust-domain",
        type: "string",
        valueName: "<td>",
        help: "Trust domain of the Fabric installation (spiffe://<td>/...).",
      },
      {
        name: "identity-id",
        type: "string",
        valueName: "<id>",
        help: "The identity to use: the directory name under $FABRIC_HOME/certs/.",
      },
      ...groups.map((group) => ({
        name: urlFlag(group),
        type: "string" as const,
        valueName: "<url>",
        help: `https://host:port of the ${group} service's gRPC port.`,
      })),
    ],
    args: [{ name: "name", help: "The context to create or change." }],
    identity: "none",
    async run({ session, output, args, flags }: CommandContext) {
      const name = args[0]!;
      const text = (flag: string) => (typeof flags[flag] === "string" ? (flags[flag] as string) : undefined);
      const servers: Record<string, string> = {};
      for (const group of groups) {
        const url = text(urlFlag(group));
        if (url !== undefined) servers[group] = url;
      }
      const td = text("trust-domain");
      const id = text("identity-id");
      const patch: ContextConfig = {
        ...(td !== undefined ? { "trust-domain": td } : {}),
        ...(id !== undefined ? { identity: id } : {}),
        servers,
      };
      const config = session.config();
      config.setContext(name, patch);
      if (config.currentContext === undefined) config.use(name);
      output.print({ context: name }, () => `context "${name}" saved in ${config.path}\n`);
    },
  };

  return {
    groups: [
      {
        path: ["context"],
        summary: "Lists, switches and edits contexts (service URLs, trust domain, identity).",
        help:
          "A context names where the four services are, the trust domain and which identity to use. " +
          "They live in $FABRIC_HOME/config.yaml; --context picks one for a single command.",
        section: "commands",
      },
    ],
    commands: [ls, use, set],
  };
};
