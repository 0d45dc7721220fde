import type { Command, CommandTree, FlagSpec, TreeNode } from "./command.js";
import { EXIT_CODE_HELP } from "./exit-codes.js";
import { GLOBAL_FLAGS } from "./global-flags.js";

const WIDTH = 100;

/** `fabric --help`: what the CLI is, its commands, global flags, environment, files and exit codes. */
export function rootHelp(tree: CommandTree): string {
  const entries = [...tree.root.children.values()];
  const section = (name: "services" | "commands") =>
    list(
      entries
        .filter((n) => (n.group?.section ?? "commands") === name)
        .map((n) => [n.name, n.group?.summary ?? n.command?.summary ?? ""]),
    );
  return [
    "fabric — the command line of the Fabric control plane.",
    "",
    "Usage:",
    "  fabric <command> [flags]",
    "  fabric <service> <method> [flags]      call any RPC; `fabric <service> --help` lists them",
    "",
    "Services (generated from the contracts, one command per RPC):",
    section("services"),
    "Commands:",
    section("commands"),
    "Global flags:",
    flagList(GLOBAL_FLAGS),
    "Environment:",
    list([
      ["FABRIC_HOME", "where config.yaml and certs/<id>/ live (default ~/.fabric)"],
      ["FABRIC_CLI_WARN_DAYS", "warn when the identity expires in fewer days (default 14)"],
      ["FABRIC_CLI_RENEW_DAYS", "renew the identity automatically below this many days (default 3)"],
    ]),
    "Files:",
    list([
      ["$FABRIC_HOME/config.yaml", "contexts: service URLs, trust domain and identity per context"],
      [
        "$FABRIC_HOME/certs/<id>/",
        "an identity: key.pem (0600, never leaves this machine), cert.pem, chain.pem, ca.pem",
      ],
    ]),
    "Exit codes:",
    list(EXIT_CODE_HELP.map(([code, text]) => [String(code), text])),
  ].join("\n");
}

/** `fabric <group> --help`. */
export function groupHelp(node: TreeNode, path: string[]): string {
  const children = [...node.children.values()];
  return [
    ...(node.group ? [wrap(node.group.help, 0), ""] : []),
    "Usage:",
    `  fabric ${path.join(" ")} <command> [flags]`,
    "",
    "Commands:",
    list(children.map((c) => [c.name, c.command?.summary ?? c.group?.summary ?? ""])),
    `Run \`fabric ${path.join(" ")} <command> --help\` for a command's flags, \`fabric --help\` for global flags.`,
    "",
  ].join("\n");
}

/** `fabric <command...> --help`. */
export function commandHelp(command: Command): string {
  const args = (command.args ?? [])
    .map((a) => {
      const name = a.variadic ? `${a.name}...` : a.name;
      return a.optional ? `[${name}]` : `<${name}>`;
    })
    .join(" ");
  return [
    wrap(command.help, 0),
    "",
    "Usage:",
    `  fabric ${command.path.join(" ")}${args ? ` ${args}` : ""}${command.flags.length > 0 ? " [flags]" : ""}`,
    "",
    ...(command.args?.length ? ["Arguments:", list(command.args.map((a) => [a.name, a.help]))] : []),
    ...(command.flags.length > 0 ? ["Flags:", flagList(command.flags)] : []),
    "Global flags: --context, --server, --identity, -o/--output, --timeout, -h/--help (see `fabric --help`).",
    "",
  ].join("\n");
}

function flagList(flags: FlagSpec[]): string {
  return (
    flags
      .map((f) => {
        const names = `${f.short ? `-${f.short}, ` : ""}--${f.name}${f.valueName ? ` ${f.valueName}` : ""}`;
        return `  ${names}\n${wrap(f.help, 6)}`;
      })
      .join("\n") + "\n"
  );
}

function list(rows: [string, string][]): string {
  const width = Math.min(28, Math.max(0, ...rows.map(([name]) => name.length)));
  return (
    rows
      .map(([name, text]) =>
        name.length > width
          ? `  ${name}\n${wrap(text, width + 5)}`
          : `  ${name.padEnd(width)}   ${wrap(text, width + 5).trimStart()}`,
      )
      .join("\n") + "\n"
  );
}

/** Wraps paragraphs (separated by blank lines) at WIDTH columns, indenting every line. */
function wrap(text: string, indent: number): string {
  const pad = " ".repeat(indent);
  return text
    .split(/\n\s*\n/)
    .map((paragraph) => {
      const lines: string[] = [];
      let line = "";
      for (const word of paragraph.split(/\s+/).filter((w) => w !== "")) {
        if (line !== "" && pad.length + line.length + 1 + word.length > WIDTH) {
          lines.push(pad + line);
          line = word;
        } else {
          line = line === "" ? word : `${line} ${word}`;
        }
      }
      if (line !== "") lines.push(pad + line);
      return lines.join("\n");
    })
    .join("\n\n");
}
