import type { DescEnum, DescMessage, DescService, MessageShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { AuditOutcomeSchema } from "@fabric/proto/fabric/common/v1/audit_pb.js";
import { PrincipalKindSchema } from "@fabric/proto/fabric/common/v1/common_pb.js";
import type { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import type { Command, FlagSpec, FlagValues } from "../command.js";
import { CliError } from "../cli-error.js";
import { EXIT } from "../exit-codes.js";
import { formatKeyValues, formatTable } from "../output.js";
import { enumChoices, findEnumValue } from "../rpc/enums.js";
import { choiceFlag, clusterFlag, durationFlag, intFlag, textFlag } from "./flag-values.js";
import type { CommandModule } from "./module.js";
import { enumText, protoJson, whenText } from "./present.js";
import { registryApi } from "./registry-api.js";
import { Session } from "../session.js";

const AUDITED = ["ca", "enrollment", "registry", "router"] as const;
type Audited = (typeof AUDITED)[number];

const serviceFlag: FlagSpec = {
  name: "service",
  type: "string",
  valueName: "<service>",
  choices: AUDITED,
  help: "Whose audit log: ca, enrollment, registry (default) or router.",
};

/** ListAudit and VerifyAudit of one service: the four contracts have the same shapes field for field. */
type AuditClient = Pick<Client<typeof CaService>, "listAudit" | "verifyAudit">;

async function auditService(service: Audited): Promise<DescService> {
  switch (service) {
    case "ca":
      return (await import("@fabric/proto/fabric/ca/v1/ca_pb.js")).CaService;
    case "enrollment":
      return (await import("@fabric/proto/fabric/enrollment/v1/enrollment_pb.js")).EnrollmentService;
    case "registry":
      return (await registryApi()).RegistryService;
    case "router":
      return (await import("@fabric/proto/fabric/router/v1/router_pb.js")).RouterService;
  }
}

/**
 * The chosen service's client, and its messages as proto JSON. --server names the URL of the service the
 * command calls, which --service chooses, so a session for that service's group makes the call (and is
 * what failures are reported of).
 */
async function auditClient(session: Session, flags: FlagValues) {
  const service = choiceFlag(flags, "service", AUDITED) ?? "registry";
  const target = service === "registry" ? session : new Session(session.options, session.settings, service);
  const desc = await auditService(service);
  // The registry's events are fabric.registry.v1.AuditEvent, which fabric.common.v1.AuditEvent mirrors.
  const client = target.client(desc, service) as unknown as AuditClient;
  session.lastTarget = target.lastTarget;
  const output = (method: string) => desc.methods.find((m) => m.localName === method)!.output;
  const json = (schema: DescMessage, message: unknown) =>
    protoJson(schema, message as MessageShape<DescMessage>);
  const eventSchema = output("listAudit").fields.find((f) => f.localName === "events")!.message!;
  return {
    service,
    client,
    eventJson: (event: unknown) => json(eventSchema, event),
    verifyJson: (res: unknown) => json(output("verifyAudit"), res),
  };
}

/** `fabric audit ls|verify`: a service's append-only, hash-chained audit log (the registry's by default). */
export const auditCommands: CommandModule = (contracts) => {
  const outcomes = enumChoices(contracts.registry.getEnum("fabric.registry.v1.AuditOutcome") as DescEnum);

  const ls: Command = {
    path: ["audit", "ls"],
    summary: "Lists audit events, newest first.",
    help:
      "Lists a service's audit events (the registry's unless --service names another), newest first: who " +
      "did what to which object, and the outcome. Cluster-admins see their cluster's events, org-admins " +
      "their organization's.",
    flags: [
      serviceFlag,
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
      const outcome = choiceFlag(flags, "outcome", outcomes);
      const since = durationFlag(flags, "since");
      const limit = intFlag(flags, "limit", 1, 1000) ?? 50;
      const { client, eventJson } = await auditClient(session, flags);
      const { events } = await client.listAudit({
        clusterId: textFlag(flags, "cluster") ?? "",
        organizationId: textFlag(flags, "org") ?? "",
        actorId: textFlag(flags, "actor") ?? "",
        actionPrefix: textFlag(flags, "action") ?? "",
        targetId: textFlag(flags, "target") ?? "",
        outcome: outcome ? findEnumValue(AuditOutcomeSchema, outcome)!.number : 0,
        ...(since !== undefined ? { since: timestampFromDate(new Date(Date.now() - since)) } : {}),
        pageSize: limit,
      });
      output.print({ events: events.map(eventJson) }, () =>
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
                enumText(AuditOutcomeSchema, e.outcome),
              ]),
            ),
      );
    },
  };

  const verify: Command = {
    path: ["audit", "verify"],
    summary:
      "Recomputes the audit hash chain, checks its signed checkpoints and reports the first broken record.",
    help:
      "Has a service (the registry unless --service names another) recompute the hash chain over its audit " +
      "log (or a range of it), check every checkpoint it signed of the chain, and report the first record " +
      "where either breaks: a changed, deleted or reordered record, a record rewritten with the chain after " +
      "it re-hashed, or records cut off the end. Exits 0 when intact, 1 when broken.",
    flags: [
      serviceFlag,
      { name: "from", type: "string", valueName: "<seq>", help: "First record to check (default 1)." },
      { name: "to", type: "string", valueName: "<seq>", help: "Last record to check (default the latest)." },
    ],
    identity: "check",
    server: "registry",
    async run({ session, flags, output }) {
      const from = intFlag(flags, "from", 1, Number.MAX_SAFE_INTEGER);
      const to = intFlag(flags, "to", 1, Number.MAX_SAFE_INTEGER);
      const { service, client, verifyJson } = await auditClient(session, flags);
      const res = await client.verifyAudit({
        fromSeq: BigInt(from ?? 0),
        toSeq: BigInt(to ?? 0),
      });
      output.print(verifyJson(res), () =>
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
          `the ${service}'s audit chain is broken at record ${res.firstBrokenSeq}: ${res.problem}`,
          "records were changed, removed or reordered outside Fabric: treat the database as tampered with",
        );
      }
    },
  };

  return {
    groups: [
      {
        path: ["audit"],
        summary: "Lists and verifies a service's hash-chained audit log.",
        help: "Every change in a service is written with an audit event in the same transaction; each event's hash covers the previous one, and the service signs checkpoints of the chain, so tampering shows.",
        section: "commands",
      },
    ],
    commands: [ls, verify],
  };
};
