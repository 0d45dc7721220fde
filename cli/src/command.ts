import type { Io } from "./io.js";
import type { Output } from "./output.js";
import type { Session } from "./session.js";

/** A command-line flag of one command, in node:util parseArgs terms plus what help and completion show. */
export interface FlagSpec {
  /** Long name without dashes: `cluster-id`. */
  name: string;
  short?: string;
  type: "string" | "boolean";
  /** May be given more than once; the values arrive as an array. */
  multiple?: boolean;
  /** Shown after the flag in help: `<duration>`. */
  valueName?: string;
  help: string;
  /** The accepted values, for help and shell completion. */
  choices?: readonly string[];
}

export interface ArgSpec {
  name: string;
  help: string;
  optional?: boolean;
  /** The last argument only: takes every remaining positional (e.g. a command line after `--`). */
  variadic?: boolean;
  /** The accepted values, for shell completion. */
  choices?: readonly string[];
}

/**
 * How a command treats the caller's identity before it runs (see identity-check.ts):
 *   check  — warn when it expires soon, renew it when it is about to, refuse to run when it has expired;
 *   report — the same, but an expired identity is reported instead of blocking (for `fabric whoami`);
 *   none   — the command does not use an identity.
 */
export type IdentityUse = "check" | "report" | "none";

export type FlagValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

export interface CommandContext {
  /** Values of this command's flags, by long name. */
  flags: FlagValues;
  /** Positional arguments after the command words. */
  args: string[];
  session: Session;
  output: Output;
  io: Io;
  /** Every command, for commands that describe the CLI itself (completion). */
  tree: CommandTree;
}

/** One runnable command, e.g. `fabric registry list-nodes` or `fabric context use`. */
export interface Command {
  path: string[];
  /** One line, for the parent's list. */
  summary: string;
  /** Full description (paragraphs) for `--help`. */
  help: string;
  flags: FlagSpec[];
  args?: ArgSpec[];
  identity: IdentityUse;
  /** The service group `--server` points at for this command (its URL overrides the context's). */
  server?: string;
  run(ctx: CommandContext): Promise<void>;
}

/** A command group, e.g. `fabric registry` or `fabric context`. */
export interface Group {
  path: string[];
  summary: string;
  help: string;
  /** Where `fabric --help` lists it. */
  section: "services" | "commands";
}

export interface TreeNode {
  name: string;
  group?: Group;
  command?: Command;
  children: Map<string, TreeNode>;
}

/**
 * Every command the CLI knows, as a tree of words. Generated RPC commands and hand-written workflow
 * commands (modules under commands/) are added the same way; a clash is a programming error and fails
 * at start-up (and in the descriptor-walk test).
 */
export class CommandTree {
  readonly root: TreeNode = { name: "fabric", children: new Map() };

  addGroup(group: Group): void {
    const node = this.nodeAt(group.path, true);
    if (node.command || node.group) throw new Error(`"${group.path.join(" ")}" is defined twice`);
    node.group = group;
  }

  addCommand(command: Command): void {
    const parent = this.nodeAt(command.path.slice(0, -1), false);
    if (parent !== this.root && !parent.group) {
      throw new Error(`"${command.path.join(" ")}" needs its group "${parent.name}" added first`);
    }
    const node = this.nodeAt(command.path, true);
    if (node.command || node.group) throw new Error(`"${command.path.join(" ")}" is defined twice`);
    node.command = command;
  }

  /** The node at a path, or undefined. */
  find(path: string[]): TreeNode | undefined {
    let node: TreeNode | undefined = this.root;
    for (const word of path) node = node?.children.get(word);
    return node;
  }

  /** Every command, depth first in insertion order. */
  commands(): Command[] {
    const out: Command[] = [];
    const walk = (node: TreeNode) => {
      if (node.command) out.push(node.command);
      for (const child of node.children.values()) walk(child);
    };
    walk(this.root);
    return out;
  }

  private nodeAt(path: string[], create: boolean): TreeNode {
    let node = this.root;
    for (const word of path) {
      let next = node.children.get(word);
      if (!next) {
        if (!create) throw new Error(`no group "${path.join(" ")}"`);
        if (node.command) throw new Error(`"${node.name}" is a command and cannot have subcommands`);
        next = { name: word, children: new Map() };
        node.children.set(word, next);
      }
      node = next;
    }
    return node;
  }
}
