import { join } from "node:path";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  CreateJoinTokenResponseSchema,
  EnrollmentService,
  JoinTokenSchema,
  JoinTokenStateSchema,
  type JoinToken,
} from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import type { Command } from "../command.js";
import { usageError } from "../cli-error.js";
import { DEFAULT_CLUSTER_ID } from "../local-fabric.js";
import { formatKeyValues, formatTable } from "../output.js";
import type { Session } from "../session.js";
import { enumChoices, findEnumValue } from "../rpc/enums.js";
import { choiceFlag, clusterFlag, durationFlag, intFlag, listFlag, textFlag } from "./flag-values.js";
import type { CommandModule } from "./module.js";
import { collectPages, enumText, listText, protoJson, whenText } from "./present.js";

/** `fabric token create|ls|revoke`: join tokens, the one-time credential a node enrolls with. */
export const tokenCommands: CommandModule = () => {
  const createToken: Command = {
    path: ["token", "create"],
    summary: "Creates a join token for nodes to enroll with (shown once).",
    help:
      "Creates a join token scoped to one cluster, a set of roles nodes may request, a number of uses and " +
      "an expiry. The full token <id>.<secret> is printed exactly once: only a hash of the secret is " +
      "stored. Hand it to the node's operator for `fabric-agent enroll` (through FABRIC_JOIN_TOKEN, so it " +
      "stays out of the process list). Nodes wait for an admin's approval unless --auto-approve is given.",
    flags: [
      clusterFlag(
        `Cluster the token admits nodes into (default: ${DEFAULT_CLUSTER_ID}, the cluster \`fabric up\` creates).`,
      ),
      {
        name: "roles",
        type: "string",
        multiple: true,
        valueName: "<role,...>",
        help: "Roles nodes joining with the token may request and be granted (repeat or separate with commas). Default: none; roles can be assigned after approval with `fabric role assign`.",
      },
      {
        name: "uses",
        type: "string",
        valueName: "<n>",
        help: "How many nodes may join with it (1-1000, default 1).",
      },
      {
        name: "ttl",
        type: "string",
        valueName: "<duration>",
        help: "How long it is valid (e.g. 30m, 2h; default 1h, at most 24h).",
      },
      {
        name: "auto-approve",
        type: "boolean",
        help: "Approve join requests made with it without an admin decision (audited like manual approvals). Only for tightly scoped automation.",
      },
      {
        name: "description",
        type: "string",
        valueName: "<text>",
        help: "Note for operators, e.g. `rack 12 reinstall`. Never put secrets here.",
      },
    ],
    identity: "check",
    server: "enrollment",
    async run({ session, flags, output }) {
      const ttl = durationFlag(flags, "ttl");
      const res = await session.client(EnrollmentService, "enrollment").createJoinToken({
        clusterId: textFlag(flags, "cluster") ?? DEFAULT_CLUSTER_ID,
        allowedRoles: listFlag(flags, "roles"),
        maxUses: intFlag(flags, "uses", 1, 1000) ?? 1,
        ...(ttl !== undefined ? { ttl: durationFromMs(ttl) } : {}),
        autoApprove: flags["auto-approve"] === true,
        description: textFlag(flags, "description") ?? "",
      });
      output.print(protoJson(CreateJoinTokenResponseSchema, res), () => {
        const t = res.joinToken!;
        return (
          formatKeyValues([["token", res.token], ...tokenFacts(t)]) +
          "\nThe token is shown only this once. On the node, enroll with:\n" +
          `  FABRIC_JOIN_TOKEN='<token>' fabric-agent enroll --server ${enrollmentUrl(session)} ` +
          `--ca-bundle ${caBundlePath(session)} --cluster ${t.clusterId}\n` +
          "then approve the request with `fabric join ls` and `fabric join approve <id>`.\n"
        );
      });
    },
  };

  const ls: Command = {
    path: ["token", "ls"],
    summary: "Lists join tokens (never their secrets).",
    help: "Lists join tokens, newest first, with their cluster, roles, uses, state and expiry. Secrets are never shown: they are not stored.",
    flags: [
      clusterFlag("Only tokens of this cluster (default: every cluster you may see)."),
      {
        name: "state",
        type: "string",
        valueName: "<state>",
        choices: enumChoices(JoinTokenStateSchema),
        help: `Only tokens in this state: ${enumChoices(JoinTokenStateSchema).join(", ")}.`,
      },
    ],
    identity: "check",
    server: "enrollment",
    async run({ session, flags, output }) {
      const state = choiceFlag(flags, "state", enumChoices(JoinTokenStateSchema));
      const client = session.client(EnrollmentService, "enrollment");
      const tokens = await collectPages(async (pageToken) => {
        const page = await client.listJoinTokens({
          clusterId: textFlag(flags, "cluster") ?? "",
          state: state ? findEnumValue(JoinTokenStateSchema, state)!.number : 0,
          pageSize: 1000,
          pageToken,
        });
        return { items: page.joinTokens, nextPageToken: page.nextPageToken };
      });
      output.print({ joinTokens: tokens.map((t) => protoJson(JoinTokenSchema, t)) }, () =>
        tokens.length === 0
          ? "no join tokens\n"
          : formatTable(
              ["ID", "CLUSTER", "ROLES", "USES", "STATE", "AUTO_APPROVE", "EXPIRES", "DESCRIPTION"],
              tokens.map((t) => [
                t.id,
                t.clusterId,
                listText(t.allowedRoles),
                `${t.uses}/${t.maxUses}`,
                enumText(JoinTokenStateSchema, t.state),
                t.autoApprove ? "yes" : "no",
                whenText(t.expiresAt),
                t.description,
              ]),
            ),
      );
    },
  };

  const revoke: Command = {
    path: ["token", "revoke"],
    summary: "Revokes a join token so no node can use it any more.",
    help:
      "Revokes a join token by its id (the part before the dot). Join requests already made with it stay " +
      "as they are: approve or reject them with `fabric join`. Revoking a revoked token succeeds.",
    flags: [],
    args: [{ name: "token-id", help: "The token id, as `fabric token ls` shows it." }],
    identity: "check",
    server: "enrollment",
    async run({ session, args, output }) {
      const id = args[0]!;
      // A full token carries its secret: refuse it here, so the secret is never sent anywhere.
      if (id.includes(".")) {
        throw usageError(
          "give the token id only (the part before the dot), not the full token with its secret",
          "`fabric token ls` lists the ids",
        );
      }
      const res = await session.client(EnrollmentService, "enrollment").revokeJoinToken({ tokenId: id });
      const t = res.joinToken!;
      output.print(
        protoJson(JoinTokenSchema, t),
        () => `revoked join token ${t.id}\n` + formatKeyValues(tokenFacts(t)),
      );
    },
  };

  return {
    groups: [
      {
        path: ["token"],
        summary: "Creates, lists and revokes join tokens for enrolling nodes.",
        help:
          "A join token admits nodes into one cluster: `<id>.<secret>`, where only a hash of the secret is " +
          "stored. It is scoped to a cluster and a set of roles, limited in uses and time, and revocable.",
        section: "commands",
      },
    ],
    commands: [createToken, ls, revoke],
  };
};

function tokenFacts(t: JoinToken): [string, string][] {
  return [
    ["id", t.id],
    ["cluster", t.clusterId],
    ["roles", listText(t.allowedRoles)],
    ["uses", `${t.uses}/${t.maxUses}`],
    ["state", enumText(JoinTokenStateSchema, t.state)],
    ["auto-approve", t.autoApprove ? "yes" : "no"],
    ["expires", whenText(t.expiresAt)],
    ...(t.description ? [["description", t.description] as [string, string]] : []),
  ];
}

function enrollmentUrl(session: Session): string {
  return session.serviceUrl("enrollment") ?? "<enrollment url>";
}

/** The roots a node needs for its first call: the ones the admin's own identity trusts. */
function caBundlePath(session: Session): string {
  const dir = session.identityDir();
  return dir ? join(dir, "ca.pem") : "<fabric root certificate>";
}
