// What a node may tell the registry. Over its Session a node reports only within its placement in the
// cluster of its certificate: the status of a workload not placed on it, or a probe of a peer that is no
// member of its cluster, is acknowledged (so the agent does not resend it forever) but never recorded,
// and is counted and audited. And no free text the registry accepts — from a node's join facts or
// session, or from an admin — may carry control or bidi characters, which would act on the terminal of
// the admin reading it.
import type { Client } from "@connectrpc/connect";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { AuditOutcome } from "@fabric/proto/fabric/registry/v1/audit_pb.js";
import type { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, eventually, refusal } from "./support/calls.js";
import { startRegistry, type RegistryFixture } from "./support/registry-fixture.js";
import { heartbeat, openSession } from "./support/sessions.js";

let f: RegistryFixture;
let admin: Client<typeof RegistryService>;
let enrollment: Client<typeof RegistryService>;

const workload = (id: string, role: string, extra: Record<string, unknown> = {}) => ({
  spec: {
    id,
    clusterId: "c1",
    role,
    runtime: Runtime.NATIVE,
    environment: Environment.DEV,
    command: "/bin/true",
    ...extra,
  },
});

async function refusedReports(): Promise<number> {
  const text = await (await fetch(`${f.running.server.httpUrl}/metrics`)).text();
  const line = text
    .split("\n")
    .find(
      (l) =>
        l.startsWith("fabric_registry_reports_refused_total{") &&
        l.includes('kind="workloadStatus"') &&
        l.includes('reason="workload_not_placed"'),
    );
  return line ? Number(line.split(" ").at(-1)) : 0;
}

beforeAll(async () => {
  f = await startRegistry({ FABRIC_CHANGE_COALESCE_MS: "60000" });
  admin = f.client(f.admin);
  enrollment = f.client(await f.pki.issue({ kind: "service", id: "enrollment" }));
  await admin.createCluster({ clusterId: "c1", name: "One" });
  await admin.createOrganization({ organizationId: "o1", name: "One" });
  await admin.createOrganization({ organizationId: "o2", name: "Two" });
  for (const id of ["worker", "other", "peer"]) {
    await enrollment.registerNode({
      nodeId: id,
      clusterId: "c1",
      joinRequestId: `jr-${id}`,
      capabilities: ["can_run_rdp_worker", "can_run_vnc_worker"],
    });
  }
  await admin.assignRole({ nodeId: "worker", clusterId: "c1", role: "rdp-worker", organizationId: "o1" });
  await admin.assignRole({ nodeId: "other", clusterId: "c1", role: "vnc-worker" });
  await admin.assignRole({ nodeId: "other", clusterId: "c1", role: "rdp-worker", organizationId: "o2" });
  await admin.putWorkload(workload("placed", "rdp-worker", { organizationId: "o1" }));
  await admin.putWorkload(workload("other-role", "vnc-worker"));
  await admin.putWorkload(workload("other-org", "rdp-worker", { organizationId: "o2" }));
  await admin.putWorkload(
    workload("pinned-elsewhere", "rdp-worker", { organizationId: "o1", nodeIds: ["worker"] }),
  );
});
afterAll(async () => {
  await f?.close();
});

describe("a node's Session reports within its placement", () => {
  it("acknowledges but never records the status of a workload not placed on the node; counts and audits it", async () => {
    const counted = await refusedReports();
    const session = openSession(f.client(await f.pki.issue({ kind: "node", id: "other", cluster: "c1" })));
    const report = (workloadId: string) =>
      session.send({
        case: "workloadStatus",
        value: { workloadId, generation: 1n, state: WorkloadState.FAILED },
      });
    // "other" holds vnc-worker, and rdp-worker for o2 only: "placed" (o1) and the pinned one are not its.
    report("placed");
    report("placed");
    report("pinned-elsewhere");
    const own = [report("other-role"), report("other-org")];
    await session.waitAcked(own.at(-1)!);
    await session.close();

    const rows = await f.pool.query<{ workload_id: string }>(
      "SELECT workload_id FROM workload_status WHERE node_id = 'other' ORDER BY 1",
    );
    expect(rows.rows.map((r) => r.workload_id)).toEqual(["other-org", "other-role"]);
    const logged = await f.pool.query("SELECT count(*)::int AS n FROM report_log WHERE node_id = 'other'");
    expect(logged.rows[0].n).toBe(2);
    expect((await refusedReports()) - counted).toBe(3);
    const audit = await eventually(async () => {
      const res = await admin.listAudit({ actorId: "other", outcome: AuditOutcome.DENIED, pageSize: 100 });
      return res.events.length >= 2 ? res : undefined;
    });
    expect(audit.events.map((e) => `${e.action} ${e.targetId} ${e.details.reason}`).sort()).toEqual([
      "session.workload_status pinned-elsewhere workload_not_placed",
      "session.workload_status placed workload_not_placed",
    ]);
  });

  it("records a placed workload's status, and refuses probes of peers outside the cluster", async () => {
    const session = openSession(f.client(await f.pki.issue({ kind: "node", id: "worker", cluster: "c1" })));
    session.send({
      case: "workloadStatus",
      value: { workloadId: "placed", generation: 1n, state: WorkloadState.HEALTHY },
    });
    session.send({ case: "probe", value: { peerNodeId: "peer", samples: 3 } });
    await session.waitAcked(session.send({ case: "probe", value: { peerNodeId: "stranger", samples: 3 } }));
    await session.close();
    const status = await f.pool.query("SELECT state FROM workload_status WHERE node_id = 'worker'");
    expect(status.rows).toEqual([{ state: WorkloadState.HEALTHY }]);
    const probes = await f.pool.query("SELECT to_node_id FROM probe_stats WHERE from_node_id = 'worker'");
    expect(probes.rows).toEqual([{ to_node_id: "peer" }]);
  });

  it("changes nothing when it refuses a session's first report", async () => {
    await admin.createCluster({ clusterId: "c2", name: "Two" });
    await admin.putWorkload({ spec: { ...workload("elsewhere", "rdp-worker").spec, clusterId: "c2" } });
    const as = async (serialHex: string) =>
      openSession(f.client(await f.pki.issue({ kind: "node", id: "peer", cluster: "c1" }, { serialHex })));
    const refused = await as("5e55");
    refused.send({
      case: "workloadStatus",
      value: { workloadId: "elsewhere", state: WorkloadState.RUNNING },
    });
    expect((await refused.ended)?.code).toBe(Code.PermissionDenied);
    // A session that gets as far as one accepted report records its (renewed) certificate...
    const accepted = await as("600d");
    await accepted.waitAcked(accepted.send(heartbeat()));
    await accepted.close();
    const membership = await eventually(async () => {
      const m = (await admin.listMemberships({ nodeId: "peer" })).memberships[0]!;
      return m.certificateSerial === "600d" ? m : undefined;
    });
    // ...the refused one left no trace but its refusal.
    const recorded = await admin.listAudit({
      actionPrefix: "membership.certificate",
      targetId: membership.id,
    });
    expect(recorded.events.map((e) => e.details.serial)).toEqual(["600d"]);
    const logged = await f.pool.query<{ seq: string }>(
      "SELECT seq::text FROM report_log WHERE node_id = 'peer'",
    );
    expect(logged.rows).toEqual([{ seq: "1" }]);
    // Audited beside the refused session, not holding it up.
    const refusals = await eventually(async () => {
      const res = await admin.listAudit({ actorId: "peer", outcome: AuditOutcome.DENIED });
      return res.events.length > 0 ? res.events : undefined;
    });
    expect(refusals.map((e) => e.action)).toEqual(["session.report"]);
  });
});

describe("free text with control or bidi characters", () => {
  const ESC_CLEAR = "\u001b[2J";
  const OSC8 = "\u001b]8;;https://evil.example/\u0007click\u001b]8;;\u0007";
  const BIDI = "abc\u202edcba";
  const C1_CSI = "x\u009b31m";

  it("is refused in a node's join facts and name, naming the field", async () => {
    const cases: [string, Record<string, unknown>][] = [
      ["facts.hostname", { facts: { hostname: `edge${ESC_CLEAR}` } }],
      ["facts.os_version", { facts: { osVersion: OSC8 } }],
      ["facts.region", { facts: { region: BIDI } }],
      ["facts.addresses[0]", { facts: { addresses: [`10.0.0.1:70${C1_CSI}`] } }],
      ['facts.labels value of "site"', { facts: { labels: { site: BIDI } } }],
      ["node_name", { nodeName: `name\u2066x` }],
    ];
    for (const [field, extra] of cases) {
      const err = await refusal(
        enrollment.registerNode({
          nodeId: "n-text",
          clusterId: "c1",
          joinRequestId: `jr-${field}`,
          ...extra,
        }),
      );
      expect(err.code, field).toBe(Code.InvalidArgument);
      expect(err.rawMessage, field).toContain(`${field} must not contain control or bidi characters`);
    }
    expect((await refusal(admin.getNode({ nodeId: "n-text" }))).code).toBe(Code.NotFound);
  });

  it("is refused in a Session's reports, ending the session with the field named", async () => {
    const node = f.client(await f.pki.issue({ kind: "node", id: "worker", cluster: "c1" }));
    const cases: [string, Parameters<ReturnType<typeof openSession>["send"]>[0]][] = [
      ["heartbeat.health_message", heartbeat({ healthMessage: ESC_CLEAR })],
      ["heartbeat.agent_version", heartbeat({ agentVersion: `1.0${C1_CSI}` })],
      ["heartbeat.addresses[0]", heartbeat({ addresses: [`h\u202e:1`] })],
      ["workload_status.message", { case: "workloadStatus", value: { workloadId: "placed", message: OSC8 } }],
    ];
    for (const [field, payload] of cases) {
      const session = openSession(node);
      session.send(payload);
      const err = await session.ended;
      expect(err?.code, field).toBe(Code.InvalidArgument);
      expect(err?.rawMessage, field).toContain(`seq 1: ${field} must not contain control or bidi characters`);
    }
  });

  it("is refused in admins' names and reasons; multi-line notes keep line breaks", async () => {
    // Each call starts only when it is awaited: a refusal arriving before its turn would go unhandled.
    for (const [field, call] of [
      ["name", () => admin.createCluster({ clusterId: "c-text", name: `One${BIDI}` })],
      [
        "description",
        () => admin.createOrganization({ organizationId: "o-text", name: "x", description: ESC_CLEAR }),
      ],
      ["reason", () => admin.disableMembership({ membershipId: "m-x", reason: `rack\rmove` })],
    ] as const) {
      const err = await refusal(call());
      expect(err.code, field).toBe(Code.InvalidArgument);
      expect(err.rawMessage, field).toContain(`${field} must not contain control or bidi characters`);
    }
    const note = "first line\n\tsecond line";
    expect(
      (await admin.createCluster({ clusterId: "c-note", name: "Noted", description: note })).cluster
        ?.description,
    ).toBe(note);
  });

  it("is never echoed raw in an error message", async () => {
    const err = await refusal(admin.createCluster({ clusterId: `c${BIDI}`, name: "x" }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).not.toMatch(/[\u202a-\u202e]/);
    expect(err.rawMessage).toContain("\\u202e");
  });
});
