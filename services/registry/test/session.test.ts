import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import type { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { DirectiveKind } from "@fabric/proto/fabric/registry/v1/session_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, eventually } from "./support/calls.js";
import { startRegistry, type RegistryFixture } from "./support/registry-fixture.js";
import { heartbeat, openSession } from "./support/sessions.js";

let f: RegistryFixture;
let admin: Client<typeof RegistryService>;
let enrollment: Client<typeof RegistryService>;
const HEARTBEAT_MS = 300;

async function register(nodeId: string, clusterId = "c1", capabilities: string[] = ["can_run_rdp_worker"]) {
  await enrollment.registerNode({
    nodeId,
    clusterId,
    joinRequestId: `jr-${nodeId}-${clusterId}`,
    capabilities,
  });
}

const nodeClient = async (id: string, cluster = "c1") =>
  f.client(await f.pki.issue({ kind: "node", id, cluster }));

const directives = (s: { responses: { payload: { case?: string; value?: unknown } }[] }) =>
  s.responses.flatMap((r) =>
    r.payload.case === "directive" ? [(r.payload.value as { kind: DirectiveKind }).kind] : [],
  );

beforeAll(async () => {
  f = await startRegistry({
    FABRIC_HEARTBEAT_INTERVAL_MS: String(HEARTBEAT_MS),
    FABRIC_CHANGE_COALESCE_MS: "60000",
  });
  admin = f.client(f.admin);
  enrollment = f.client(await f.pki.issue({ kind: "service", id: "enrollment" }));
  await admin.createCluster({ clusterId: "c1", name: "One" });
  await admin.createCluster({ clusterId: "c2", name: "Two" });
});
afterAll(async () => {
  await f?.close();
});

describe("Session", () => {
  it("acknowledges a report only once it is durable", async () => {
    await register("n-ack");
    const session = openSession(await nodeClient("n-ack"));
    let last = 0n;
    for (let i = 0; i < 50; i++) last = session.send(heartbeat({ cpuRatio: i / 100 }));
    await session.waitAcked(last);
    // Every acknowledged sequence number is already in the log.
    const acked = session.acked();
    const rows = await f.pool.query(
      "SELECT max(seq)::int AS max, count(*)::int AS n FROM report_log WHERE node_id = 'n-ack'",
    );
    expect(BigInt(rows.rows[0].max)).toBeGreaterThanOrEqual(acked);
    expect(rows.rows[0].n).toBe(50);
    // Acks are per batch, not per report.
    expect(session.responses.filter((r) => r.payload.case === "ack").length).toBeLessThan(50);
    const node = (await admin.getNode({ nodeId: "n-ack" })).node!;
    expect(node.online).toBe(true);
    expect(node.lastHeartbeat?.agentVersion).toBe("1.0.0");
    expect(await session.close()).toBeUndefined();
  });

  it("refuses sequence numbers that do not start at 1 and grow by one", async () => {
    await register("n-seq");
    const session = openSession(await nodeClient("n-seq"));
    session.sendRaw({ seq: 2n, payload: heartbeat() });
    const err = await session.ended;
    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.rawMessage).toMatch(/expected 1, got 2/);
  });

  it("refuses malformed reports", async () => {
    await register("n-bad");
    const session = openSession(await nodeClient("n-bad"));
    session.send(heartbeat({ cpuRatio: 7 }));
    expect((await session.ended)?.rawMessage).toMatch(/cpu_ratio must be between 0 and 1/);
    const probe = openSession(await nodeClient("n-bad"));
    probe.send({ case: "probe", value: { peerNodeId: "n-bad", latency: durationFromMs(3) } });
    expect((await probe.ended)?.rawMessage).toMatch(/does not probe itself/);
    const status = openSession(await nodeClient("n-bad"));
    status.send({
      case: "workloadStatus",
      value: {
        workloadId: "w-any",
        state: WorkloadState.RUNNING,
        stateChangedAt: { seconds: 1n, nanos: -1 },
      },
    });
    expect((await status.ended)?.rawMessage).toMatch(
      /workload_status.state_changed_at is not a valid timestamp/,
    );
  });

  it("lets a node report only where it holds an active membership", async () => {
    const stranger = openSession(await nodeClient("n-nobody"));
    expect((await stranger.ended)?.code).toBe(Code.PermissionDenied);
    await register("n-scope");
    const elsewhere = openSession(await nodeClient("n-scope", "c2"));
    const err = await elsewhere.ended;
    expect(err?.code).toBe(Code.PermissionDenied);
    expect(err?.rawMessage).toMatch(/not a member of cluster "c2"/);
    // a workload of another cluster is not the node's to report on
    await admin.putWorkload({
      spec: {
        id: "w-c2",
        clusterId: "c2",
        role: "rdp-worker",
        runtime: Runtime.NATIVE,
        environment: Environment.DEV,
        command: "x",
      },
    });
    const session = openSession(await nodeClient("n-scope"));
    session.send({ case: "workloadStatus", value: { workloadId: "w-c2", state: WorkloadState.RUNNING } });
    expect((await session.ended)?.code).toBe(Code.PermissionDenied);
  });

  it("records workload status and coalesces probes into smoothed pair figures", async () => {
    await register("n-status");
    await admin.assignRole({ nodeId: "n-status", clusterId: "c1", role: "rdp-worker" });
    await admin.putWorkload({
      spec: {
        id: "w-1",
        clusterId: "c1",
        role: "rdp-worker",
        runtime: Runtime.NATIVE,
        environment: Environment.DEV,
        command: "x",
      },
    });
    const session = openSession(await nodeClient("n-status"));
    session.send({
      case: "workloadStatus",
      value: { workloadId: "w-1", generation: 1n, state: WorkloadState.HEALTHY, restarts: 2 },
    });
    session.send({
      case: "workloadStatus",
      value: { workloadId: "w-deleted", state: WorkloadState.RUNNING },
    });
    let last = 0n;
    for (let i = 0; i < 40; i++) {
      last = session.send({
        case: "probe",
        value: { peerNodeId: "n-ack", latency: durationFromMs(10 + (i % 2)), lossRatio: 0, samples: 10 },
      });
    }
    await session.waitAcked(last);
    const status = await eventually(
      async () => (await admin.listWorkloadStatus({ nodeId: "n-status" })).statuses[0],
    );
    expect(status).toMatchObject({
      workloadId: "w-1",
      clusterId: "c1",
      state: WorkloadState.HEALTHY,
      restarts: 2,
    });
    const probe = await f.pool.query(
      "SELECT latency_us, samples FROM probe_stats WHERE from_node_id = 'n-status'",
    );
    expect(probe.rows[0].latency_us).toBeGreaterThan(9_900);
    expect(probe.rows[0].latency_us).toBeLessThan(11_100);
    expect(probe.rows[0].samples).toBe(400);
    // 40 reports, but the feed carries the pair only when its figures move
    const changes = await f.pool.query("SELECT count(*)::int AS n FROM changes WHERE kind = 'probe_stats'");
    expect(changes.rows[0].n).toBeLessThanOrEqual(2);
    await session.close();
  });

  it("sends DRAIN and ends the session when its membership is disabled", async () => {
    await register("n-drain");
    const session = openSession(await nodeClient("n-drain"));
    await session.waitAcked(session.send(heartbeat()));
    const m = (await admin.listMemberships({ nodeId: "n-drain" })).memberships[0]!;
    await admin.disableMembership({ membershipId: m.id, reason: "rack move" });
    const err = await session.ended;
    expect(directives(session)).toEqual([DirectiveKind.DRAIN]);
    expect(err?.code).toBe(Code.FailedPrecondition);
    expect(err?.rawMessage).toMatch(/disabled: rack move/);
    expect((await openSession(await nodeClient("n-drain")).ended)?.code).toBe(Code.FailedPrecondition);
  });

  it("sends SHUTDOWN to a revoked node and has the CA revoke it", async () => {
    await register("n-revoke");
    const client = await nodeClient("n-revoke");
    const session = openSession(client);
    await session.waitAcked(session.send(heartbeat()));
    const res = await admin.revokeNode({ nodeId: "n-revoke", comment: "stolen laptop" });
    expect(res.node?.state).toBe(2);
    expect(f.ca.revoked.at(-1)?.target).toMatchObject({ case: "principal", value: { id: "n-revoke" } });
    await session.ended;
    expect(directives(session)).toContain(DirectiveKind.SHUTDOWN);
    // its certificate is now refused outright
    const again = openSession(client);
    expect((await again.ended)?.code).toBe(Code.Unauthenticated);
  });

  it("keeps the ban when the CA is down, and completes the revocation on retry", async () => {
    await register("n-retry");
    f.ca.failing = true;
    try {
      const err = await admin
        .revokeNode({ nodeId: "n-retry" })
        .catch((e: unknown) => e as { code: Code; rawMessage: string });
      expect(err).toMatchObject({ code: Code.Unavailable });
      expect((err as { rawMessage: string }).rawMessage).toMatch(
        /banned in the registry, but the CA did not revoke/,
      );
      expect((await admin.getNode({ nodeId: "n-retry" })).node?.state).toBe(2);
    } finally {
      f.ca.failing = false;
    }
    await admin.revokeNode({ nodeId: "n-retry" });
    expect(f.ca.revoked.at(-1)?.target).toMatchObject({ value: { id: "n-retry" } });
    const audit = await admin.listAudit({ targetId: "n-retry", actionPrefix: "node.revoke" });
    expect(audit.events.map((e) => `${e.action}:${e.outcome}`)).toEqual([
      "node.revoke_certificates:1",
      "node.revoke_certificates:3",
      "node.revoke:1",
    ]);
  });

  it("replaces an older session of the same node and cluster", async () => {
    await register("n-twice");
    const first = openSession(await nodeClient("n-twice"));
    await first.waitAcked(first.send(heartbeat()));
    const second = openSession(await nodeClient("n-twice"));
    await second.waitAcked(second.send(heartbeat()));
    expect((await first.ended)?.rawMessage).toMatch(/replaced by a newer session/);
    await second.close();
  });

  it("asks a node whose certificate is past two thirds of its life to renew now, and records its new serial", async () => {
    await register("n-old");
    const day = 86_400_000;
    const creds = await f.pki.issue(
      { kind: "node", id: "n-old", cluster: "c1" },
      {
        notBefore: new Date(Date.now() - 25 * day),
        notAfter: new Date(Date.now() + 5 * day),
        serialHex: "7a01",
      },
    );
    const session = openSession(f.client(creds));
    await session.waitAcked(session.send(heartbeat()));
    expect(directives(session)).toEqual([DirectiveKind.RENEW_NOW]);
    const m = await eventually(async () => {
      const membership = (await admin.listMemberships({ nodeId: "n-old" })).memberships[0];
      return membership?.certificateSerial === "7a01" ? membership : undefined;
    });
    expect(m.certificateNotAfter).toBeDefined();
    await session.close();
  });

  it("marks a node offline after three missed heartbeats", async () => {
    await register("n-quiet");
    const session = openSession(await nodeClient("n-quiet"));
    await session.waitAcked(session.send(heartbeat()));
    await eventually(async () =>
      (await admin.getNode({ nodeId: "n-quiet" })).node?.online ? true : undefined,
    );
    // No more heartbeats: offline once 3 × 300 ms have passed.
    const node = await eventually(async () => {
      const n = (await admin.getNode({ nodeId: "n-quiet" })).node!;
      return n.online ? undefined : n;
    });
    expect(node.lastHeartbeatAt).toBeDefined();
    const events = await admin.listAudit({ targetId: "n-quiet", actionPrefix: "node.o" });
    expect(events.events.map((e) => e.action)).toEqual(["node.offline", "node.online"]);
    // a heartbeat brings it back
    await session.waitAcked(session.send(heartbeat()));
    await eventually(async () =>
      (await admin.getNode({ nodeId: "n-quiet" })).node?.online ? true : undefined,
    );
    await session.close();
  });
});
