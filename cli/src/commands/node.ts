import type { DescEnum } from "@bufbuild/protobuf";
import { RevocationReasonSchema } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { WorkloadStateSchema } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import type { Command } from "../command.js";
import { formatKeyValues, formatTable, terminalText } from "../output.js";
import { enumChoices, findEnumValue } from "../rpc/enums.js";
import { choiceFlag, clusterFlag, textFlag } from "./flag-values.js";
import type { CommandModule } from "./module.js";
import { collectPages, enumText, listText, protoJson, whenText } from "./present.js";
import { registryApi } from "./registry-api.js";

/** `fabric node ls|show|revoke`: the nodes the registry knows, and taking one out for good. */
export const nodeCommands: CommandModule = (contracts) => {
  const nodeStates = contracts.registry.getEnum("fabric.registry.v1.NodeState") as DescEnum;
  const reasons = enumChoices(RevocationReasonSchema);

  const ls: Command = {
    path: ["node", "ls"],
    summary: "Lists nodes: state, online, clusters and roles, host.",
    help: "Lists nodes ordered by name, with their identity state, whether they are online (a live session with heartbeats), their memberships with the roles held in each, host facts and the last heartbeat.",
    flags: [
      clusterFlag("Only nodes with a membership in this cluster."),
      {
        name: "state",
        type: "string",
        valueName: "<state>",
        choices: enumChoices(nodeStates),
        help: `Only nodes in this state: ${enumChoices(nodeStates).join(", ")}.`,
      },
      { name: "role", type: "string", valueName: "<role>", help: "Only nodes holding this role." },
    ],
    identity: "check",
    server: "registry",
    async run({ session, flags, output }) {
      const api = await registryApi();
      const state = choiceFlag(flags, "state", enumChoices(nodeStates));
      const client = session.client(api.RegistryService, "registry");
      const nodes = await collectPages(async (pageToken) => {
        const page = await client.listNodes({
          clusterId: textFlag(flags, "cluster") ?? "",
          role: textFlag(flags, "role") ?? "",
          state: state ? findEnumValue(api.NodeStateSchema, state)!.number : 0,
          pageSize: 1000,
          pageToken,
        });
        return { items: page.nodes, nextPageToken: page.nextPageToken };
      });
      output.print({ nodes: nodes.map((n) => protoJson(api.NodeSchema, n)) }, () =>
        nodes.length === 0
          ? "no nodes\n"
          : formatTable(
              ["ID", "NAME", "STATE", "ONLINE", "HEALTH", "CLUSTERS (ROLES)", "HOST", "LAST_HEARTBEAT"],
              nodes.map((n) => [
                n.id,
                n.name,
                enumText(api.NodeStateSchema, n.state),
                n.online ? "yes" : "no",
                enumText(api.NodeHealthSchema, n.health),
                n.memberships.map((m) => `${m.clusterId}(${m.roles.join(",")})`).join(" "),
                n.facts?.hostname ?? "",
                whenText(n.lastHeartbeatAt),
              ]),
            ),
      );
    },
  };

  const show: Command = {
    path: ["node", "show"],
    summary: "Shows one node: facts, capabilities, memberships, roles, workloads.",
    help:
      "Shows a node's identity state, host facts, reported capabilities, last heartbeat, its membership in " +
      "each cluster (certificate serial and expiry), its role assignments and the status of the workloads " +
      "it runs.",
    flags: [],
    args: [{ name: "node-id", help: "The node id (see `fabric node ls`)." }],
    identity: "check",
    server: "registry",
    async run({ session, args, output }) {
      const api = await registryApi();
      const nodeId = args[0]!;
      const client = session.client(api.RegistryService, "registry");
      const { node } = await client.getNode({ nodeId });
      const [assignments, statuses] = await Promise.all([
        collectPages(async (pageToken) => {
          const page = await client.listRoleAssignments({ nodeId, pageSize: 1000, pageToken });
          return { items: page.roleAssignments, nextPageToken: page.nextPageToken };
        }),
        collectPages(async (pageToken) => {
          const page = await client.listWorkloadStatus({ nodeId, pageSize: 1000, pageToken });
          return { items: page.statuses, nextPageToken: page.nextPageToken };
        }),
      ]);
      const n = node!;
      const doc = {
        node: protoJson(api.NodeSchema, n),
        roleAssignments: assignments.map((a) => protoJson(api.RoleAssignmentSchema, a)),
        workloads: statuses.map((s) => protoJson(api.WorkloadStatusSchema, s)),
      };
      output.print(doc, () => {
        const facts = n.facts;
        const beat = n.lastHeartbeat;
        const parts = [
          formatKeyValues(
            (
              [
                ["id", n.id],
                ["name", n.name],
                ["state", enumText(api.NodeStateSchema, n.state)],
                ["online", n.online ? "yes" : "no"],
                ["health", enumText(api.NodeHealthSchema, n.health)],
                ["hostname", facts?.hostname ?? ""],
                ["os", [facts?.os, facts?.osVersion].filter(Boolean).join(" ")],
                ["arch", facts?.arch ?? ""],
                ["agent version", beat?.agentVersion || facts?.agentVersion || ""],
                ["region", facts?.region ?? ""],
                ["addresses", (facts?.addresses ?? []).join(",")],
                ["capabilities", n.capabilities.join(",")],
                ["last heartbeat", whenText(n.lastHeartbeatAt)],
                ["snapshot version", beat?.snapshotVersion ? String(beat.snapshotVersion) : ""],
                ["created", whenText(n.createdAt)],
                ["revoked", whenText(n.revokedAt)],
              ] as [string, string][]
            )
              .filter(([, v]) => v !== "")
              // One line each: a line break the node reported shows as \n.
              .map(([k, v]) => [k, terminalText(v)]),
          ),
          "memberships:\n" +
            formatTable(
              ["ID", "CLUSTER", "STATE", "ROLES", "CERTIFICATE", "CERTIFICATE_EXPIRES"],
              n.memberships.map((m) => [
                m.id,
                m.clusterId,
                enumText(api.MembershipStateSchema, m.state),
                listText(m.roles),
                m.certificateSerial,
                whenText(m.certificateNotAfter),
              ]),
            ),
          "role assignments:\n" +
            (assignments.length === 0
              ? "  (none)\n"
              : formatTable(
                  ["ID", "CLUSTER", "ROLE", "ORGANIZATION", "ASSIGNED"],
                  assignments.map((a) => [
                    a.id,
                    a.clusterId,
                    a.role,
                    a.organizationId,
                    whenText(a.assignedAt),
                  ]),
                )),
          "workloads:\n" +
            (statuses.length === 0
              ? "  (none)\n"
              : formatTable(
                  ["WORKLOAD", "CLUSTER", "GENERATION", "STATE", "RESTARTS", "MESSAGE"],
                  statuses.map((s) => [
                    s.workloadId,
                    s.clusterId,
                    String(s.generation),
                    enumText(WorkloadStateSchema, s.state),
                    String(s.restarts),
                    s.message,
                  ]),
                )),
        ];
        return parts.join("\n");
      });
    },
  };

  const revoke: Command = {
    path: ["node", "revoke"],
    summary: "Revokes a node for good: every certificate, every membership; its agent stops.",
    help:
      "Has the CA revoke every certificate of the node, marks the node and its memberships revoked and bans " +
      "its id. Its open streams are cut within a second and its agent stops, asking for re-enrollment; the " +
      "host can only come back as a new node with a new join token. Final.",
    flags: [
      {
        name: "reason",
        type: "string",
        valueName: "<reason>",
        choices: reasons,
        help: `Revocation reason recorded at the CA (default privilege_withdrawn; key_compromise when the host's key may be stolen): ${reasons.join(", ")}.`,
      },
      {
        name: "comment",
        type: "string",
        valueName: "<text>",
        help: "Note for the audit log, at most 512 characters.",
      },
    ],
    args: [{ name: "node-id", help: "The node id (see `fabric node ls`)." }],
    identity: "check",
    server: "registry",
    async run({ session, args, flags, output }) {
      const api = await registryApi();
      const reason = choiceFlag(flags, "reason", reasons);
      const res = await session.client(api.RegistryService, "registry").revokeNode({
        nodeId: args[0]!,
        reason: reason ? findEnumValue(RevocationReasonSchema, reason)!.number : 0,
        comment: textFlag(flags, "comment") ?? "",
      });
      output.print(protoJson(api.RevokeNodeResponseSchema, res), () => {
        const n = res.node!;
        return (
          `revoked node ${terminalText(n.id)} (${terminalText(n.name)}): ${res.revokedSerials.length} certificate(s) revoked\n` +
          formatKeyValues([["serials", listText(res.revokedSerials)]])
        );
      });
    },
  };

  return {
    groups: [
      {
        path: ["node"],
        summary: "Lists, shows and revokes nodes.",
        help: "Nodes are the hosts running fabric-agent. A node may belong to several clusters through isolated memberships.",
        section: "commands",
      },
    ],
    commands: [ls, show, revoke],
  };
};
