import type { Command } from "../command.js";
import { CliError } from "../cli-error.js";
import { EXIT } from "../exit-codes.js";
import { DEFAULT_CLUSTER_ID } from "../local-fabric.js";
import { formatTable } from "../output.js";
import { clusterFlag, textFlag } from "./flag-values.js";
import type { CommandModule } from "./module.js";
import { collectPages, protoJson, whenText } from "./present.js";
import { registryApi } from "./registry-api.js";

const ORG_FLAG = {
  name: "org",
  type: "string",
  valueName: "<id>",
  help: "Restrict the role to this organization (default: all organizations).",
} as const;

/** `fabric role assign|rm|ls`: what a node may do in a cluster. */
export const roleCommands: CommandModule = () => {
  const assign: Command = {
    path: ["role", "assign"],
    summary: "Authorizes a node to perform a role in a cluster.",
    help:
      "Assigns a role from the catalog to a node in a cluster, optionally only for one organization. " +
      "Refused (exit 6) unless the node has an active membership in the cluster and reports every " +
      "capability the role requires (e.g. relay-node needs can_route_mesh). Assigning an existing " +
      "assignment again returns it unchanged. The node's agent starts the role's workloads with its next " +
      "snapshot.",
    flags: [clusterFlag(`Cluster of the assignment (default: ${DEFAULT_CLUSTER_ID}).`), ORG_FLAG],
    args: [
      { name: "node-id", help: "The node (see `fabric node ls`)." },
      { name: "role", help: "The role (`fabric registry list-roles` shows the catalog)." },
    ],
    identity: "check",
    server: "registry",
    async run({ session, args, flags, output }) {
      const api = await registryApi();
      const res = await session.client(api.RegistryService, "registry").assignRole({
        nodeId: args[0]!,
        role: args[1]!,
        clusterId: textFlag(flags, "cluster") ?? DEFAULT_CLUSTER_ID,
        organizationId: textFlag(flags, "org") ?? "",
      });
      const a = res.roleAssignment!;
      output.print(
        protoJson(api.RoleAssignmentSchema, a),
        () =>
          `node ${a.nodeId} holds role ${a.role} in cluster ${a.clusterId}` +
          `${a.organizationId ? ` for organization ${a.organizationId}` : ""} (assignment ${a.id})\n`,
      );
    },
  };

  const rm: Command = {
    path: ["role", "rm"],
    summary: "Removes a role from a node; its workloads of that role stop.",
    help:
      "Removes the node's assignment of the role in the cluster (and organization, if given). The node " +
      "stops the workloads that depended on it once its next snapshot arrives.",
    flags: [clusterFlag(`Cluster of the assignment (default: ${DEFAULT_CLUSTER_ID}).`), ORG_FLAG],
    args: [
      { name: "node-id", help: "The node." },
      { name: "role", help: "The role to remove." },
    ],
    identity: "check",
    server: "registry",
    async run({ session, args, flags, output }) {
      const api = await registryApi();
      const [nodeId, role] = [args[0]!, args[1]!];
      const clusterId = textFlag(flags, "cluster") ?? DEFAULT_CLUSTER_ID;
      const organizationId = textFlag(flags, "org") ?? "";
      const client = session.client(api.RegistryService, "registry");
      const { roleAssignments } = await client.listRoleAssignments({
        nodeId,
        role,
        clusterId,
        organizationId,
        pageSize: 1000,
      });
      // An empty organization filter lists every scope: remove the assignment with exactly the scope asked for.
      const target = roleAssignments.find((a) => a.organizationId === organizationId);
      if (!target) {
        throw new CliError(
          EXIT.notFound,
          `node ${nodeId} does not hold role ${role} in cluster ${clusterId}` +
            (organizationId ? ` for organization ${organizationId}` : ""),
          "`fabric role ls --node <id>` lists its assignments",
        );
      }
      const res = await client.removeRole({ roleAssignmentId: target.id });
      const a = res.roleAssignment!;
      output.print(
        protoJson(api.RoleAssignmentSchema, a),
        () => `removed role ${a.role} from node ${a.nodeId} in cluster ${a.clusterId} (assignment ${a.id})\n`,
      );
    },
  };

  const ls: Command = {
    path: ["role", "ls"],
    summary: "Lists role assignments.",
    help: "Lists role assignments, ordered by cluster, node and role.",
    flags: [
      clusterFlag("Only assignments in this cluster."),
      { name: "node", type: "string", valueName: "<id>", help: "Only assignments of this node." },
      { name: "role", type: "string", valueName: "<role>", help: "Only assignments of this role." },
      { ...ORG_FLAG, help: "Only assignments scoped to this organization." },
    ],
    identity: "check",
    server: "registry",
    async run({ session, flags, output }) {
      const api = await registryApi();
      const client = session.client(api.RegistryService, "registry");
      const assignments = await collectPages(async (pageToken) => {
        const page = await client.listRoleAssignments({
          clusterId: textFlag(flags, "cluster") ?? "",
          nodeId: textFlag(flags, "node") ?? "",
          role: textFlag(flags, "role") ?? "",
          organizationId: textFlag(flags, "org") ?? "",
          pageSize: 1000,
          pageToken,
        });
        return { items: page.roleAssignments, nextPageToken: page.nextPageToken };
      });
      output.print({ roleAssignments: assignments.map((a) => protoJson(api.RoleAssignmentSchema, a)) }, () =>
        assignments.length === 0
          ? "no role assignments\n"
          : formatTable(
              ["ID", "CLUSTER", "NODE", "ROLE", "ORGANIZATION", "ASSIGNED", "BY"],
              assignments.map((a) => [
                a.id,
                a.clusterId,
                a.nodeId,
                a.role,
                a.organizationId,
                whenText(a.assignedAt),
                a.assignedBy?.id ?? "",
              ]),
            ),
      );
    },
  };

  return {
    groups: [
      {
        path: ["role"],
        summary: "Assigns and removes nodes' roles.",
        help:
          "A role (entry-node, relay-node, egress-node, rdp-worker, ...) is what a node may do in a cluster. " +
          "Capabilities are what a node can do: a role is only assigned to a node that reports every " +
          "capability the role requires.",
        section: "commands",
      },
    ],
    commands: [assign, rm, ls],
  };
};
