import { setTimeout as sleep } from "node:timers/promises";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  EnrollmentService,
  JoinRequestSchema,
  JoinRequestState,
  JoinRequestStateSchema,
  type JoinRequest,
} from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import type { Command } from "../command.js";
import { CliError, usageError } from "../cli-error.js";
import { EXIT } from "../exit-codes.js";
import { formatKeyValues, formatTable, terminalText } from "../output.js";
import { startProgress } from "../progress.js";
import { enumChoices, findEnumValue } from "../rpc/enums.js";
import { choiceFlag, clusterFlag, durationFlag, listFlag, textFlag } from "./flag-values.js";
import type { CommandModule } from "./module.js";
import { collectPages, enumText, listText, protoJson, whenText } from "./present.js";

const WAIT_POLL_MS = 1_000;

/** `fabric join ls|show|approve|reject`: reviewing and deciding nodes' join requests. */
export const joinCommands: CommandModule = () => {
  const stateChoices = enumChoices(JoinRequestStateSchema);

  const ls: Command = {
    path: ["join", "ls"],
    summary: "Lists join requests with the facts, capabilities and roles each node reported.",
    help:
      "Lists join requests, newest first: the node's name, host facts (hostname, OS, architecture), " +
      "reported capabilities, the roles it requested next to the roles its token allows, and the SHA-256 " +
      "of its public key (compare it with what `fabric-agent enroll` printed on the host before " +
      "approving). --wait blocks until at least one request matches, showing progress.",
    flags: [
      clusterFlag("Only requests for this cluster (default: every cluster you may see)."),
      {
        name: "state",
        type: "string",
        valueName: "<state>",
        choices: stateChoices,
        help: `Only requests in this state: ${stateChoices.join(", ")} (default: any; pending with --wait).`,
      },
      {
        name: "wait",
        type: "boolean",
        help: "Wait until a matching request exists (e.g. while a node enrolls), then list.",
      },
    ],
    identity: "check",
    server: "enrollment",
    async run({ session, flags, output, io }) {
      const wait = flags.wait === true;
      const stateWord = choiceFlag(flags, "state", stateChoices) ?? (wait ? "pending" : undefined);
      const state = stateWord ? findEnumValue(JoinRequestStateSchema, stateWord)!.number : 0;
      const clusterId = textFlag(flags, "cluster") ?? "";
      const client = session.client(EnrollmentService, "enrollment");
      const list = () =>
        collectPages(async (pageToken) => {
          const page = await client.listJoinRequests({ clusterId, state, pageSize: 1000, pageToken });
          return { items: page.joinRequests, nextPageToken: page.nextPageToken };
        });
      let requests = await list();
      if (wait && requests.length === 0) {
        const progress = startProgress(io, `waiting for a ${stateWord} join request`);
        while (requests.length === 0) {
          await sleep(WAIT_POLL_MS);
          requests = await list();
        }
        progress.done(`${requests.length} ${stateWord} join request(s)`);
      }
      output.print({ joinRequests: requests.map((r) => protoJson(JoinRequestSchema, r)) }, () =>
        requests.length === 0
          ? "no join requests\n"
          : formatTable(
              [
                "ID",
                "STATE",
                "CLUSTER",
                "NAME",
                "HOST",
                "OS",
                "ARCH",
                "CAPABILITIES",
                "REQUESTED",
                "ALLOWED",
                "KEY_SHA256",
                "CREATED",
              ],
              requests.map((r) => [
                r.id,
                enumText(JoinRequestStateSchema, r.state),
                r.clusterId,
                r.nodeName,
                r.facts?.hostname ?? "",
                r.facts?.os ?? "",
                r.facts?.arch ?? "",
                listText(r.capabilities),
                listText(r.requestedRoles),
                listText(r.allowedRoles),
                `${r.publicKeySha256.slice(0, 16)}…`,
                whenText(r.createdAt),
              ]),
            ),
      );
    },
  };

  const show: Command = {
    path: ["join", "show"],
    summary: "Shows one join request in full: facts, capabilities, roles, key fingerprint, decision.",
    help: "Shows everything a join request holds, to review before `fabric join approve` or `fabric join reject`.",
    flags: [],
    args: [{ name: "request-id", help: "The join request id (see `fabric join ls`)." }],
    identity: "check",
    server: "enrollment",
    async run({ session, args, output }) {
      const res = await session
        .client(EnrollmentService, "enrollment")
        .getJoinRequest({ joinRequestId: args[0]! });
      const request = res.joinRequest!;
      output.print(protoJson(JoinRequestSchema, request), () => formatKeyValues(requestFacts(request)));
    },
  };

  const approve: Command = {
    path: ["join", "approve"],
    summary: "Approves a pending join request: the node gets its certificate and roles.",
    help:
      "Approves a pending join request. Enrollment has the CA sign the node's certificate and the registry " +
      "create the node and its membership; the waiting agent then receives its identity. Grants the " +
      "requested roles the token allows, or only those given with --roles; each role needs the node to " +
      "report the capabilities it requires. --key-sha256 first checks the request's key against the " +
      "fingerprint `fabric-agent enroll` printed on the host, and refuses on mismatch. Approving an " +
      "approved request again returns it unchanged.",
    flags: [
      {
        name: "roles",
        type: "string",
        multiple: true,
        valueName: "<role,...>",
        help: "Roles to grant: a subset of those requested and allowed (default: all of them).",
      },
      {
        name: "key-sha256",
        type: "string",
        valueName: "<hex>",
        help: "The public key SHA-256 the host printed; the approval is refused unless the request's key matches.",
      },
      {
        name: "node-id",
        type: "string",
        valueName: "<id>",
        help: "Attach the request to this existing node (the same host joining another cluster) instead of creating one.",
      },
      {
        name: "lifetime",
        type: "string",
        valueName: "<duration>",
        help: "Certificate lifetime (e.g. 7d; default 30 days, at most 90 days).",
      },
    ],
    args: [{ name: "request-id", help: "The join request id (see `fabric join ls`)." }],
    identity: "check",
    server: "enrollment",
    async run({ session, args, flags, output }) {
      const id = args[0]!;
      const client = session.client(EnrollmentService, "enrollment");
      const expectedKey = textFlag(flags, "key-sha256");
      if (expectedKey !== undefined) await checkKeyFingerprint(expectedKey, id, client);
      const lifetime = durationFlag(flags, "lifetime");
      const res = await client.approveJoinRequest({
        joinRequestId: id,
        grantedRoles: listFlag(flags, "roles"),
        nodeId: textFlag(flags, "node-id") ?? "",
        ...(lifetime !== undefined ? { certificateLifetime: durationFromMs(lifetime) } : {}),
      });
      const r = res.joinRequest!;
      output.print(
        protoJson(JoinRequestSchema, r),
        () =>
          `approved join request ${terminalText(r.id)}: node ${terminalText(r.nodeId)} (${terminalText(r.nodeName)}) joined cluster ${terminalText(r.clusterId)}\n` +
          formatKeyValues([
            ["granted roles", listText(r.grantedRoles)],
            ["requested roles", listText(r.requestedRoles)],
            ["allowed roles", listText(r.allowedRoles)],
            ["certificate", r.certificateSerial],
          ]) +
          "The agent collects its certificate now; assign further roles with `fabric role assign`.\n",
      );
    },
  };

  const reject: Command = {
    path: ["join", "reject"],
    summary: "Rejects a pending join request, with a reason the waiting agent is shown.",
    help: "Rejects a pending join request. The reason (1-512 characters) is shown to the waiting agent and recorded in the audit log.",
    flags: [
      {
        name: "reason",
        type: "string",
        valueName: "<text>",
        help: "Why, shown to the node's operator and audited. Required.",
      },
    ],
    args: [{ name: "request-id", help: "The join request id (see `fabric join ls`)." }],
    identity: "check",
    server: "enrollment",
    async run({ session, args, flags, output }) {
      const reason = textFlag(flags, "reason");
      if (!reason) throw usageError("--reason is required: the waiting agent is shown it and it is audited");
      const res = await session
        .client(EnrollmentService, "enrollment")
        .rejectJoinRequest({ joinRequestId: args[0]!, reason });
      const r = res.joinRequest!;
      output.print(
        protoJson(JoinRequestSchema, r),
        () => `rejected join request ${terminalText(r.id)} (${terminalText(r.nodeName)})\n`,
      );
    },
  };

  return {
    groups: [
      {
        path: ["join"],
        summary: "Reviews, approves and rejects nodes' join requests.",
        help:
          "A node enrolling with a join token creates a join request; it waits until an admin approves or " +
          "rejects it (unless its token auto-approves). Review what the node reported before deciding.",
        section: "commands",
      },
    ],
    commands: [ls, show, approve, reject],
  };
};

/** Refuses to approve unless the request carries the key the operator saw on the host. */
async function checkKeyFingerprint(
  expected: string,
  id: string,
  client: { getJoinRequest(req: { joinRequestId: string }): Promise<{ joinRequest?: JoinRequest }> },
): Promise<void> {
  const wanted = expected.replace(/[:\s]/g, "").toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(wanted)) {
    throw usageError("--key-sha256 must be the 64 hex digits `fabric-agent enroll` printed");
  }
  const { joinRequest } = await client.getJoinRequest({ joinRequestId: id });
  if (joinRequest?.publicKeySha256 !== wanted) {
    throw new CliError(
      EXIT.precondition,
      `join request ${terminalText(id)} carries key ${terminalText(joinRequest?.publicKeySha256 ?? "(none)")}, not the one given with --key-sha256; not approved`,
      "the request may not come from the host you expect: check with its operator, reject it if in doubt",
    );
  }
  if (joinRequest.state !== JoinRequestState.PENDING && joinRequest.state !== JoinRequestState.APPROVED) {
    throw new CliError(
      EXIT.precondition,
      `join request ${id} is ${enumText(JoinRequestStateSchema, joinRequest.state)}; only pending requests can be approved`,
    );
  }
}

function requestFacts(r: JoinRequest): [string, string][] {
  const f = r.facts;
  const pairs: [string, string][] = [
    ["id", r.id],
    ["state", enumText(JoinRequestStateSchema, r.state)],
    ["cluster", r.clusterId],
    ["node name", r.nodeName],
    ["hostname", f?.hostname ?? ""],
    ["os", [f?.os, f?.osVersion].filter(Boolean).join(" ")],
    ["arch", f?.arch ?? ""],
    ["cpu cores", f?.cpuCores ? String(f.cpuCores) : ""],
    ["memory", f?.memoryBytes ? `${(Number(f.memoryBytes) / 2 ** 30).toFixed(1)} GiB` : ""],
    ["agent version", f?.agentVersion ?? ""],
    ["region", f?.region ?? ""],
    ["addresses", (f?.addresses ?? []).join(",")],
    ["capabilities", listText(r.capabilities)],
    ["requested roles", listText(r.requestedRoles)],
    ["allowed roles", listText(r.allowedRoles)],
    ["public key sha256", r.publicKeySha256],
    ["from", r.peerAddress],
    ["token", r.tokenId],
    ["created", whenText(r.createdAt)],
    ["expires", whenText(r.expiresAt)],
  ];
  if (r.state !== JoinRequestState.PENDING && r.state !== JoinRequestState.EXPIRED) {
    pairs.push(["decided", whenText(r.decidedAt)], ["decided by", r.decidedBy?.id ?? ""]);
  }
  if (r.rejectionReason) pairs.push(["rejection reason", r.rejectionReason]);
  if (r.nodeId) pairs.push(["node id", r.nodeId], ["granted roles", listText(r.grantedRoles)]);
  if (r.certificateSerial) pairs.push(["certificate", r.certificateSerial]);
  // Every value is one line by contract: a line break the joiner put in a fact shows as \n.
  return pairs.filter(([, v]) => v !== "").map(([k, v]) => [k, terminalText(v)]);
}
