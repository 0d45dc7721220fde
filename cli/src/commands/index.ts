import { CommandTree } from "../command.js";
import type { Contracts } from "../rpc/contracts.js";
import { rpcCommands } from "../rpc/rpc-commands.js";
import { auditCommands } from "./audit.js";
import { caLocalCommands } from "./ca-local.js";
import { completionCommands } from "./completion.js";
import { contextCommands } from "./context.js";
import { devCommands } from "./dev.js";
import { joinCommands } from "./join.js";
import type { CommandModule } from "./module.js";
import { nodeCommands } from "./node.js";
import { roleCommands } from "./role.js";
import { tokenCommands } from "./token.js";
import { upCommands } from "./up.js";
import { whoamiCommands } from "./whoami.js";
import { workloadCommands } from "./workload.js";

/** The workflow modules, in the order `fabric --help` lists them. A new workflow is one line here. */
const WORKFLOWS: CommandModule[] = [
  upCommands,
  caLocalCommands,
  tokenCommands,
  joinCommands,
  nodeCommands,
  roleCommands,
  workloadCommands,
  auditCommands,
  devCommands,
  contextCommands,
  whoamiCommands,
  completionCommands,
];

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
