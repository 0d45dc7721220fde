import { CommandTree } from "../command.js";
import type { Contracts } from "../rpc/contracts.js";
import { rpcCommands } from "../rpc/rpc-commands.js";
import { completionCommands } from "./completion.js";
import { contextCommands } from "./context.js";
import type { CommandModule } from "./module.js";
import { whoamiCommands } from "./whoami.js";

/** The workflow modules, in the order `fabric --help` lists them. A new workflow is one line here. */
const WORKFLOWS: CommandModule[] = [contextCommands, whoamiCommands, completionCommands];

/** The whole CLI: the generated RPC layer first (its groups are what workflows like `ca init` join). */
export function buildCommandTree(contracts: Contracts): CommandTree {
  const tree = new CommandTree();
  for (const module of [rpcCommands, ...WORKFLOWS]) {
    const { groups = [], commands } = module(contracts);
    for (const group of groups) tree.addGroup(group);
    for (const command of commands) tree.addCommand(command);
  }
  return tree;
}
