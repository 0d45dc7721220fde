import { ConnectError } from "@connectrpc/connect";
import { CliError, usageError } from "./cli-error.js";
import type { Command, CommandTree, TreeNode } from "./command.js";
import { buildCommandTree } from "./commands/index.js";
import { EXIT } from "./exit-codes.js";
import { GLOBAL_FLAGS, readGlobalOptions } from "./global-flags.js";
import { commandHelp, groupHelp, rootHelp } from "./help.js";
import { checkIdentity } from "./identity-check.js";
import type { Io } from "./io.js";
import { Output, terminalText } from "./output.js";
import { parseFlags } from "./parse-flags.js";
import { loadContracts } from "./rpc/contracts.js";
import { rpcFailure } from "./rpc-failure.js";
import { Session } from "./session.js";
import { loadSettings } from "./settings.js";

/**
 * Runs one command line and returns the exit code. Parsing is node:util parseArgs throughout: the
 * command words are found first (global flags may come before them), then the rest is parsed strictly
 * against the global flags plus that command's flags.
 */
export async function runCli(argv: string[], io: Io): Promise<number> {
  let session: Session | undefined;
  let path: string[] = [];
  try {
    const tree = buildCommandTree(loadContracts());
    const located = locate(tree, argv);
    path = located.path;
    const { node, rest } = located;
    const command = node.command;
    if (!command) {
      const { positionals } = parseFlags(rest, GLOBAL_FLAGS);
      if (positionals.length > 0) {
        throw usageError(
          `unknown command "${[...path, positionals[0]].join(" ")}"`,
          `run \`fabric ${path.length > 0 ? `${path.join(" ")} ` : ""}--help\` for the list`,
        );
      }
      io.out(node === tree.root ? rootHelp(tree) : groupHelp(node, path));
      return EXIT.ok;
    }
    const { values, positionals } = parseFlags(rest, [...GLOBAL_FLAGS, ...command.flags]);
    if (values.help === true) {
      io.out(commandHelp(command));
      return EXIT.ok;
    }
    checkArguments(command, positionals);
    const options = readGlobalOptions(values, io.stdoutIsTty);
    if (options.server !== undefined && command.server === undefined) {
      throw usageError(`--server does not apply to \`fabric ${path.join(" ")}\`: it calls no service`);
    }
    session = new Session(options, loadSettings(io.env), command.server);
    if (command.identity !== "none") await checkIdentity(session, command.identity, io);
    await command.run({
      flags: values,
      args: positionals,
      session,
      output: new Output(io, options.output),
      io,
      tree,
    });
    return EXIT.ok;
  } catch (err) {
    const failure = toCliError(err, session, path);
    // Server messages can quote what an anonymous joiner or a node wrote: never terminal control.
    io.err(`error: ${terminalText(failure.message)}\n`);
    if (failure.hint) io.err(`hint: ${terminalText(failure.hint)}\n`);
    return failure.exitCode;
  }
}

/**
 * Finds the command words: walks the tree with each word that is not a flag, skipping the values of
 * global flags given before the command. Stops at a command; the rest (flags, arguments) is returned.
 */
function locate(tree: CommandTree, argv: string[]): { node: TreeNode; path: string[]; rest: string[] } {
  const valued = new Set(
    GLOBAL_FLAGS.filter((f) => f.type === "string").flatMap((f) => [
      `--${f.name}`,
      ...(f.short ? [`-${f.short}`] : []),
    ]),
  );
  let node = tree.root;
  const path: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (node.command || arg === "--") {
      rest.push(...argv.slice(i));
      break;
    }
    if (arg.startsWith("-")) {
      rest.push(arg);
      if (valued.has(arg) && i + 1 < argv.length) rest.push(argv[++i]!);
      continue;
    }
    const child = node.children.get(arg);
    if (!child) {
      rest.push(...argv.slice(i));
      break;
    }
    node = child;
    path.push(arg);
  }
  return { node, path, rest };
}

function checkArguments(command: Command, positionals: string[]): void {
  const specs = command.args ?? [];
  const required = specs.filter((a) => !a.optional).length;
  const usage = `see \`fabric ${command.path.join(" ")} --help\``;
  if (positionals.length > specs.length && !specs.at(-1)?.variadic) {
    // The stray argument is not echoed: it may be a secret typed without its flag.
    throw usageError(
      specs.length === 0
        ? `\`fabric ${command.path.join(" ")}\` takes no arguments, only flags (got ${positionals.length})`
        : `too many arguments: \`fabric ${command.path.join(" ")}\` takes ${specs.length}`,
      usage,
    );
  }
  if (positionals.length < required) {
    throw usageError(`missing argument <${specs[positionals.length]!.name}>`, usage);
  }
}

function toCliError(err: unknown, session: Session | undefined, path: string[]): CliError {
  if (err instanceof CliError) return err;
  if (err instanceof ConnectError) {
    return session ? rpcFailure(err, session, path) : new CliError(EXIT.failure, err.message);
  }
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS")) {
    return usageError(
      (err as Error).message,
      `see \`fabric ${path.length > 0 ? `${path.join(" ")} ` : ""}--help\``,
    );
  }
  return new CliError(EXIT.failure, err instanceof Error ? err.message : String(err));
}
