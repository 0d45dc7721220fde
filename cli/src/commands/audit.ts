import type { DescEnum } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { PrincipalKindSchema } from "@fabric/proto/fabric/common/v1/common_pb.js";
import type { Command } from "../command.js";
import { CliError } from "../cli-error.js";
import { EXIT } from "../exit-codes.js";
import { formatKeyValues, formatTable } from "../output.js";
import { enumChoices, findEnumValue } from "../rpc/enums.js";
import { choiceFlag, clusterFlag, durationFlag, intFlag, textFlag } from "./flag-values.js";
import type { CommandModule } from "./module.js";
import { enumText, protoJson, whenText } from "./present.js";
import { registryApi } from "./registry-api.js";

/** `fabric audit ls|verify`: the registry's append-only, hash-chained audit log. */
export const auditCommands: CommandModule = (contracts) => {
  const outcomes = enumChoices(contracts.registry.getEnum("fabric.registry.v1.AuditOutcome") as DescEnum);

  const ls: Command = {
    path: ["audit", "ls"],
    summary: "Lists audit events, newest first.",
    help:
      "Lists the registry's audit events, newest first: who did what to which object, and the outcome. " +
      "Cluster-admins see their cluster's events, org-admins their organization's.",
    flags: [
      clusterFlag("Only events concerning this cluster."),
      { name: "org", type: "string", valueName: "<id>", help: "Only events concerning this organization." },
      { name: "actor", type: "string", valueName: "<id>", help: "Only events by this principal id." },
      {
        name: "action",
        type: "string",
        valueName: "<prefix>",
        help: "Only actions starting with this, e.g. `node.` or `role_assignment.assign`.",
      },
      { name: "target", type: "string", valueName: "<id>", help: "Only events on this object id." },
      {
        name: "outcome",
        type: "string",
        valueName: "<outcome>",
        choices: outcomes,
        help: `Only events with this outcome: ${outcomes.join(", ")}.`,
      },
      {
        name: "since",
        type: "string",
        valueName: "<duration>",
        help: "Only events of the last <duration> (e.g. 1h, 7d).",
      },
      { name: "limit", type: "string", valueName: "<n>", help: "At most this many events (default 50)." },
    ],
    identity: "check",
    server: "registry",
    async run({ session, flags, output }) {
      const api = await registryApi();
      const outcome = choiceFlag(flags, "outcome", outcomes);
      const since = durationFlag(flags, "since");
      const limit = intFlag(flags, "limit", 1, 1000) ?? 50;
      const { events } = await session.client(api.RegistryService, "registry").listAudit({
        clusterId: textFlag(flags, "cluster") ?? "",
        organizationId: textFlag(flags, "org") ?? "",
        actorId: textFlag(flags, "actor") ?? "",
        actionPrefix: textFlag(flags, "action") ?? "",
        targetId: textFlag(flags, "target") ?? "",
        outcome: outcome ? findEnumValue(api.AuditOutcomeSchema, outcome)!.number : 0,
        ...(since !== undefined ? { since: timestampFromDate(new Date(Date.now() - since)) } : {}),
        pageSize: limit,
      });
      output.print({ events: events.map((e) => protoJson(api.AuditEventSchema, e)) }, () =>
        events.length === 0
          ? "no audit events\n"
          : formatTable(
              ["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "CLUSTER", "OUTCOME"],
              events.map((e) => [
                String(e.seq),
                whenText(e.at),
                `${enumText(PrincipalKindSchema, e.actor?.kind ?? 0)}/${e.actor?.id ?? ""}`,
                e.action,
                e.targetType ? `${e.targetType}/${e.targetId}` : e.targetId,
                e.clusterId,
                enumText(api.AuditOutcomeSchema, e.outcome),
              ]),
            ),
      );
    },
  };

  const verify: Command = {
    path: ["audit", "verify"],
    summary: "Recomputes the audit hash chain and reports the first broken record.",
    help:
      "Has the registry recompute the hash chain over the audit log (or a range of it) and report the first " +
      "record where it breaks: a changed, deleted or reordered record. Exits 0 when intact, 1 when broken. " +
      "Record the head hash it prints somewhere else to detect truncation later.",
    flags: [
      { name: "from", type: "string", valueName: "<seq>", help: "First record to check (default 1)." },
      { name: "to", type: "string", valueName: "<seq>", help: "Last record to check (default the latest)." },
    ],
    identity: "check",
    server: "registry",
    async run({ session, flags, output }) {
      const api = await registryApi();
      const from = intFlag(flags, "from", 1, Number.MAX_SAFE_INTEGER);
      const to = intFlag(flags, "to", 1, Number.MAX_SAFE_INTEGER);
      const res = await session.client(api.RegistryService, "registry").verifyAudit({
        fromSeq: BigInt(from ?? 0),
        toSeq: BigInt(to ?? 0),
      });
      output.print(protoJson(api.VerifyAuditResponseSchema, res), () =>
        formatKeyValues([
          ["chain", res.ok ? "intact" : "BROKEN"],
          ["records checked", String(res.rowsChecked)],
          ["last seq", String(res.lastSeq)],
          ["head hash", res.headHash],
          ...(res.ok
            ? []
            : ([
                ["first broken seq", String(res.firstBrokenSeq)],
                ["problem", res.problem],
              ] as [string, string][])),
        ]),
      );
      if (!res.ok) {
        throw new CliError(
          EXIT.failure,
          `the audit chain is broken at record ${res.firstBrokenSeq}: ${res.problem}`,
          "records were changed, removed or reordered outside Fabric: treat the database as tampered with",
        );
      }
    },
  };

  return {
    groups: [
      {
        path: ["audit"],
        summary: "Lists and verifies the registry's hash-chained audit log.",
        help: "Every change in the registry is written with an audit event in the same transaction; each event's hash covers the previous one, so tampering shows.",
        section: "commands",
      },
    ],
    commands: [ls, verify],
  };
};
