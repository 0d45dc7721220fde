import type { Command, Group } from "../command.js";
import type { Contracts } from "../rpc/contracts.js";

/**
 * A workflow module (`fabric context`, `fabric whoami`, and later `up`, `token`, `join`, `node`, ...):
 * the groups and commands it adds to the tree. It is given the contracts so it can use the service
 * groups and generated types; it calls services with `ctx.session.client(Service, group)`.
 */
export type CommandModule = (contracts: Contracts) => { groups?: Group[]; commands: Command[] };
