// The registry as a real process beside the real CA (test/harness): WatchChanges resumes across a
// registry crash without missing or repeating a change, RegisterNode converges after a crash, and
// RevokeNode has the CA revoke the node, whose identity the registry then refuses.
import type { Client } from "@connectrpc/connect";
import { createPool, inspectCertificate, type Pool } from "@fabric/platform";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { NodeState } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { DirectiveKind } from "@fabric/proto/fabric/registry/v1/session_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFabric, type Fabric } from "../../../test/harness/fabric.js";
import { Code, eventually } from "./support/calls.js";
import { heartbeat, openSession } from "./support/sessions.js";
import { watch } from "./support/watcher.js";

let fabric: Fabric;
let pool: Pool;
let admin: Client<typeof RegistryService>;
let enrollment: Client<typeof RegistryService>;
let router: Client<typeof RegistryService>;

const workload = (id: string) => ({
  spec: {
    id,
    clusterId: "c1",
    role: "rdp-worker",
    runtime: Runtime.NATIVE,
    environment: Environment.DEV,
    command: "/bin/true",
  },
});

beforeAll(async () => {
  fabric = await startFabric({ services: ["ca", "registry"] });
  pool = createPool({ url: fabric.databaseUrl, schema: "registry", max: 2 });
  admin = fabric.client(RegistryService, "registry");
  enrollment = fabric.client(RegistryService, "registry", fabric.serviceIdentity("enrollment"));
  router = fabric.client(RegistryService, "registry", fabric.serviceIdentity("router"));
  await admin.createCluster({ clusterId: "c1", name: "One" });
}, 120_000);

afterAll(async () => {
  await pool?.end();
  await fabric?.close();
});

describe("the registry process", () => {
  it("lets a WatchChanges client resume after a crash without missing or repeating a change", async () => {
    const live = watch(router);
    await live.synced();
    await admin.putWorkload(workload("w-a"));
    await live.waitFor((c) => c.entity.case === "workload" && c.entity.value.spec?.id === "w-a");
    const held = live.version();

    const offline = watch(router);
    await offline.synced();
    await offline.stop();
    const offlineHeld = offline.version();
    await admin.putWorkload(workload("w-b"));
    await live.waitFor((c) => c.entity.case === "workload" && c.entity.value.spec?.id === "w-b");

    await fabric.kill("registry");
    expect((await live.ended)?.code).toBeDefined();
    await fabric.start("registry");
    await admin.putWorkload(workload("w-c"));
    await admin.deleteWorkload({ workloadId: "w-a" });

    const routerKinds = "('node','membership','role_assignment','workload','egress_pool','probe_stats')";
    const committed = async (after: bigint) =>
      (
        await pool.query<{ version: string }>(
          `SELECT version::text FROM changes WHERE version > $1 AND kind IN ${routerKinds} ORDER BY version`,
          [after.toString()],
        )
      ).rows.map((r) => BigInt(r.version));

    // The interrupted watcher resumes from the last version it applied.
    const resumed = watch(router, { resumeFromVersion: live.version() });
    await resumed.synced();
    expect(resumed.messages.some((m) => m.event.case === "list")).toBe(false);
    await resumed.waitFor((c) => c.entity.case === "workload" && c.deleted);
    const seen = [...live.changes.filter((c) => c.version > held), ...resumed.changes].map((c) => c.version);
    expect(seen).toEqual(await committed(held));

    // A watcher that was away across the crash gets exactly what it missed, in order.
    const late = watch(router, { resumeFromVersion: offlineHeld });
    await late.synced();
    expect(late.changes.map((c) => c.version)).toEqual(await committed(offlineHeld));
    expect(
      late.changes.map(
        (c) =>
          `${c.entity.case === "workload" ? c.entity.value.spec?.id : c.entity.case}${c.deleted ? "-" : ""}`,
      ),
    ).toEqual(["w-b", "w-c", "w-a-"]);
    await Promise.all([resumed.stop(), late.stop()]);
  });

  it("converges to one node and one membership when RegisterNode is retried after a crash", async () => {
    const request = {
      nodeId: "n-crash",
      clusterId: "c1",
      joinRequestId: "jr-crash",
      capabilities: ["can_run_rdp_worker"],
    };
    const first = enrollment.registerNode(request).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 5));
    await fabric.kill("registry");
    await first;
    await fabric.start("registry");
    const results = await Promise.all([enrollment.registerNode(request), enrollment.registerNode(request)]);
    expect(results[0]!.membershipId).toBe(results[1]!.membershipId);
    const counts = await pool.query(
      `SELECT (SELECT count(*)::int FROM nodes WHERE id = 'n-crash') AS nodes,
              (SELECT count(*)::int FROM memberships WHERE node_id = 'n-crash') AS memberships,
              (SELECT count(*)::int FROM registrations WHERE join_request_id = 'jr-crash') AS registrations`,
    );
    expect(counts.rows[0]).toEqual({ nodes: 1, memberships: 1, registrations: 1 });
  });

  it("revokes a node at the CA: SHUTDOWN on its session, its certificate refused from then on", async () => {
    await enrollment.registerNode({ nodeId: "n-gone", clusterId: "c1", joinRequestId: "jr-gone" });
    const creds = await fabric.issue({ kind: "node", id: "n-gone", cluster: "c1" });
    const serial = inspectCertificate(creds.certificatePem).serialHex;
    const asNode = fabric.client(RegistryService, "registry", creds);
    const session = openSession(asNode);
    await session.waitAcked(session.send(heartbeat()));

    const res = await admin.revokeNode({ nodeId: "n-gone", comment: "decommissioned" });
    expect(res.node?.state).toBe(NodeState.REVOKED);
    expect(res.revokedSerials.map((s) => s.replace(/^0+/, ""))).toContain(serial.replace(/^0+/, ""));
    await session.ended;
    expect(
      session.responses.some(
        (r) => r.payload.case === "directive" && r.payload.value.kind === DirectiveKind.SHUTDOWN,
      ),
    ).toBe(true);
    // the CA's revocation reaches the registry, which then refuses the certificate itself
    await eventually(async () => {
      const again = openSession(asNode);
      const err = await again.ended;
      return err?.code === Code.Unauthenticated ? err : undefined;
    }, 15_000);
    const audit = await admin.listAudit({ targetId: "n-gone", actionPrefix: "node.revoke" });
    expect(audit.events.map((e) => e.action)).toEqual(["node.revoke_certificates", "node.revoke"]);
  });
});
