import { NodeState, MembershipState } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import { AuditOutcome } from "@fabric/proto/fabric/registry/v1/audit_pb.js";
import { Environment, PrincipalKind, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import type { Client } from "@connectrpc/connect";
import type { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, refusal } from "./support/calls.js";
import { startRegistry, type RegistryFixture } from "./support/registry-fixture.js";

let f: RegistryFixture;
let admin: Client<typeof RegistryService>;
let enrollment: Client<typeof RegistryService>;

beforeAll(async () => {
  f = await startRegistry();
  admin = f.client(f.admin);
  enrollment = f.client(await f.pki.issue({ kind: "service", id: "enrollment" }));
});
afterAll(async () => {
  await f?.close();
});

/** Audit events in chain order with a given action prefix. */
async function audited(prefix: string) {
  const res = await admin.listAudit({ actionPrefix: prefix, pageSize: 1000 });
  return res.events.reverse();
}

describe("clusters and organizations", () => {
  it("creates, reads and pages clusters; ids are checked and unique", async () => {
    for (const id of ["c1", "c2", "c3"])
      await admin.createCluster({ clusterId: id, name: `Cluster ${id}`, region: "eu" });
    const generated = await admin.createCluster({ name: "Generated" });
    expect(generated.cluster?.id).toMatch(/^c-[0-9a-f]{20}$/);
    expect((await admin.getCluster({ clusterId: "c2" })).cluster?.name).toBe("Cluster c2");

    const first = await admin.listClusters({ pageSize: 2 });
    const second = await admin.listClusters({ pageSize: 2, pageToken: first.nextPageToken });
    expect(first.clusters.map((c) => c.id)).toEqual([generated.cluster!.id, "c1"]);
    expect(new Set([...first.clusters, ...second.clusters].map((c) => c.id)).size).toBe(4);
    expect(second.nextPageToken).toBe("");

    expect((await refusal(admin.createCluster({ clusterId: "c1", name: "again" }))).code).toBe(
      Code.AlreadyExists,
    );
    const bad = await refusal(admin.createCluster({ clusterId: "C_1", name: "x" }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.rawMessage).toMatch(/cluster_id must be 1-63 characters/);
    expect((await refusal(admin.createCluster({ clusterId: "c9", name: "" }))).rawMessage).toMatch(
      /name is required/,
    );
    expect((await refusal(admin.getCluster({ clusterId: "nope" }))).code).toBe(Code.NotFound);
    expect((await refusal(admin.listClusters({ pageToken: "garbage" }))).code).toBe(Code.InvalidArgument);
  });

  it("creates organizations", async () => {
    await admin.createOrganization({ organizationId: "o1", name: "Org One" });
    await admin.createOrganization({ organizationId: "o2", name: "Org Two", labels: { tier: "gold" } });
    expect((await admin.getOrganization({ organizationId: "o2" })).organization?.labels).toEqual({
      tier: "gold",
    });
    expect((await admin.listOrganizations({})).organizations.map((o) => o.id)).toEqual(["o1", "o2"]);
  });
});

describe("RegisterNode", () => {
  it("creates a node and its membership once per join request, even under concurrent retries", async () => {
    const request = {
      nodeId: "n-1",
      nodeName: "Edge 1",
      clusterId: "c1",
      joinRequestId: "jr-1",
      capabilities: ["can_route_mesh", "can_accept_client_ingress", "can_egress_private_network"],
      grantedRoles: ["relay-node"],
      certificateSerial: "0A1B",
      facts: { hostname: "edge-1", region: "eu-central", addresses: ["10.0.0.1:7000"] },
    };
    const results = await Promise.all(Array.from({ length: 5 }, () => enrollment.registerNode(request)));
    expect(new Set(results.map((r) => r.membershipId)).size).toBe(1);
    expect(results.every((r) => r.created)).toBe(true);
    const again = await enrollment.registerNode(request);
    expect(again.membershipId).toBe(results[0]!.membershipId);

    const node = (await admin.getNode({ nodeId: "n-1" })).node!;
    expect(node.name).toBe("edge-1");
    expect(node.state).toBe(NodeState.ACTIVE);
    expect(node.memberships).toHaveLength(1);
    expect(node.memberships[0]).toMatchObject({
      clusterId: "c1",
      state: MembershipState.ACTIVE,
      roles: ["relay-node"],
      certificateSerial: "0a1b",
    });
    const rows = await f.pool.query("SELECT count(*)::int AS n FROM memberships WHERE node_id = 'n-1'");
    expect(rows.rows[0].n).toBe(1);
    expect((await audited("node.register")).filter((e) => e.targetId === "n-1")).toHaveLength(1);
  });

  it("attaches an existing node to a second cluster through its own membership", async () => {
    const res = await enrollment.registerNode({
      nodeId: "n-1",
      clusterId: "c2",
      joinRequestId: "jr-2",
      capabilities: ["can_route_mesh", "can_accept_client_ingress", "can_egress_private_network"],
      // Attaching an existing node takes an approver who administers every cluster it is in.
      approvedBy: { kind: PrincipalKind.ADMIN, id: "alice" },
    });
    expect(res.created).toBe(false);
    const node = (await admin.getNode({ nodeId: "n-1" })).node!;
    expect(node.memberships.map((m) => m.clusterId)).toEqual(["c1", "c2"]);
    // a join request id is bound to what it registered
    const err = await refusal(
      enrollment.registerNode({ nodeId: "n-9", clusterId: "c1", joinRequestId: "jr-2" }),
    );
    expect(err.code).toBe(Code.FailedPrecondition);
  });

  it("gives a taken name a numeric suffix, and refuses roles the node lacks capabilities for", async () => {
    await enrollment.registerNode({
      nodeId: "n-2",
      clusterId: "c1",
      joinRequestId: "jr-3",
      facts: { hostname: "edge-1" },
      capabilities: ["can_run_rdp_worker"],
    });
    expect((await admin.getNode({ nodeId: "n-2" })).node?.name).toBe("edge-1-2");
    const err = await refusal(
      enrollment.registerNode({
        nodeId: "n-3",
        clusterId: "c1",
        joinRequestId: "jr-4",
        grantedRoles: ["relay-node"],
      }),
    );
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toMatch(/does not report can_route_mesh/);
    expect((await refusal(admin.getNode({ nodeId: "n-3" }))).code).toBe(Code.NotFound);
  });
});

describe("paging", () => {
  it("refuses a page token from another list or replayed with other filters", async () => {
    const roles = await admin.listRoles({ pageSize: 1 });
    expect((await refusal(admin.listCapabilities({ pageToken: roles.nextPageToken }))).code).toBe(
      Code.InvalidArgument,
    );
    const page = await admin.listMemberships({ pageSize: 1 });
    expect(page.nextPageToken).not.toBe("");
    const err = await refusal(
      admin.listMemberships({ pageSize: 1, clusterId: "c2", pageToken: page.nextPageToken }),
    );
    expect(err.rawMessage).toMatch(/different filters/);
    const next = await admin.listMemberships({ pageSize: 1, pageToken: page.nextPageToken });
    expect(next.memberships[0]?.id).not.toBe(page.memberships[0]?.id);
  });
});

describe("roles and assignments", () => {
  it("refuses a role the node does not report the capabilities for, and changes nothing", async () => {
    const before = await admin.listRoleAssignments({ nodeId: "n-2" });
    const err = await refusal(admin.assignRole({ nodeId: "n-2", clusterId: "c1", role: "relay-node" }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toMatch(/does not report can_route_mesh, which role "relay-node" requires/);
    expect((await admin.listRoleAssignments({ nodeId: "n-2" })).roleAssignments).toEqual(
      before.roleAssignments,
    );
    const refusals = await admin.listAudit({
      actionPrefix: "role_assignment.create",
      outcome: AuditOutcome.FAILED,
    });
    expect(refusals.events[0]?.details.reason).toMatch(/can_route_mesh/);
  });

  it("assigns (idempotently, optionally per organization), lists and removes roles", async () => {
    const a = await admin.assignRole({
      nodeId: "n-2",
      clusterId: "c1",
      role: "rdp-worker",
      organizationId: "o1",
    });
    const again = await admin.assignRole({
      nodeId: "n-2",
      clusterId: "c1",
      role: "rdp-worker",
      organizationId: "o1",
    });
    expect(again.roleAssignment?.id).toBe(a.roleAssignment?.id);
    const unscoped = await admin.assignRole({ nodeId: "n-2", clusterId: "c1", role: "rdp-worker" });
    expect(unscoped.roleAssignment?.id).not.toBe(a.roleAssignment?.id);
    expect((await admin.getNode({ nodeId: "n-2" })).node?.memberships[0]?.roles).toEqual(["rdp-worker"]);
    expect(
      (await admin.listRoleAssignments({ organizationId: "o1" })).roleAssignments.map((x) => x.id),
    ).toEqual([a.roleAssignment!.id]);
    await admin.removeRole({ roleAssignmentId: unscoped.roleAssignment!.id });
    expect((await admin.listRoleAssignments({ nodeId: "n-2" })).roleAssignments).toHaveLength(1);
    expect((await refusal(admin.assignRole({ nodeId: "n-2", clusterId: "c1", role: "nope" }))).code).toBe(
      Code.NotFound,
    );
    expect(
      (await refusal(admin.assignRole({ nodeId: "n-2", clusterId: "c2", role: "rdp-worker" }))).code,
    ).toBe(Code.FailedPrecondition);
  });

  it("adds admin-defined roles with new capabilities to the catalog", async () => {
    const role = await admin.createRole({ name: "ssh-worker", requiredCapabilities: ["can_run_ssh_worker"] });
    expect(role.role).toMatchObject({
      builtIn: false,
      createdBy: { kind: PrincipalKind.ADMIN, id: "alice" },
    });
    const caps = await admin.listCapabilities({ pageSize: 1000 });
    expect(caps.capabilities.find((c) => c.name === "can_run_ssh_worker")).toMatchObject({
      builtIn: false,
      requiredByRoles: ["ssh-worker"],
    });
    expect(caps.capabilities.find((c) => c.name === "can_route_mesh")?.requiredByRoles).toEqual([
      "relay-node",
    ]);
    const roles = await admin.listRoles({ pageSize: 1000 });
    expect(roles.roles.filter((r) => r.builtIn).map((r) => r.name)).toHaveLength(10);
    expect((await refusal(admin.createRole({ name: "relay-node" }))).code).toBe(Code.AlreadyExists);
    expect((await refusal(admin.createRole({ name: "x", requiredCapabilities: ["route"] }))).code).toBe(
      Code.InvalidArgument,
    );
  });
});

describe("node groups and memberships", () => {
  it("nests groups per cluster, places a membership in one group, and refuses deleting a used group", async () => {
    const dc = (await admin.createNodeGroup({ clusterId: "c1", name: "dc-kazan" })).nodeGroup!;
    const rack = (await admin.createNodeGroup({ clusterId: "c1", name: "rack-1", parentGroupId: dc.id }))
      .nodeGroup!;
    expect(
      (await refusal(admin.createNodeGroup({ clusterId: "c1", name: "rack-1", parentGroupId: dc.id }))).code,
    ).toBe(Code.AlreadyExists);
    expect(
      (await refusal(admin.createNodeGroup({ clusterId: "c2", name: "x", parentGroupId: dc.id }))).code,
    ).toBe(Code.FailedPrecondition);
    const m = await admin.setNodeGroup({ nodeId: "n-1", clusterId: "c1", nodeGroupId: rack.id });
    expect(m.membership?.nodeGroupId).toBe(rack.id);
    expect((await admin.listNodes({ nodeGroupId: rack.id })).nodes.map((n) => n.id)).toEqual(["n-1"]);
    // the same node sits in no group in its other cluster
    expect(
      (await admin.getNode({ nodeId: "n-1" })).node?.memberships.find((x) => x.clusterId === "c2")
        ?.nodeGroupId,
    ).toBe("");
    expect(
      (await refusal(admin.setNodeGroup({ nodeId: "n-1", clusterId: "c2", nodeGroupId: rack.id }))).code,
    ).toBe(Code.FailedPrecondition);
    expect((await refusal(admin.deleteNodeGroup({ nodeGroupId: dc.id }))).rawMessage).toMatch(/child groups/);
    expect((await refusal(admin.deleteNodeGroup({ nodeGroupId: rack.id }))).rawMessage).toMatch(
      /still holds nodes/,
    );
    await admin.setNodeGroup({ nodeId: "n-1", clusterId: "c1", nodeGroupId: "" });
    await admin.deleteNodeGroup({ nodeGroupId: rack.id });
    expect((await admin.listNodeGroups({ clusterId: "c1" })).nodeGroups.map((g) => g.name)).toEqual([
      "dc-kazan",
    ]);
  });

  it("disables and re-enables a membership", async () => {
    const m = (await admin.listMemberships({ nodeId: "n-1", clusterId: "c2" })).memberships[0]!;
    expect((await refusal(admin.disableMembership({ membershipId: m.id }))).rawMessage).toMatch(
      /reason is required/,
    );
    const disabled = await admin.disableMembership({ membershipId: m.id, reason: "maintenance" });
    expect(disabled.membership).toMatchObject({
      state: MembershipState.DISABLED,
      disabledReason: "maintenance",
    });
    expect(
      (await admin.listMemberships({ state: MembershipState.DISABLED })).memberships.map((x) => x.id),
    ).toEqual([m.id]);
    expect((await admin.enableMembership({ membershipId: m.id })).membership?.state).toBe(
      MembershipState.ACTIVE,
    );
  });
});

describe("egress pools", () => {
  it("backs a pool only with nodes holding egress-node in its cluster", async () => {
    const pool = (
      await admin.createEgressPool({ clusterId: "c1", name: "Office Moscow", organizationIds: ["o1"] })
    ).egressPool!;
    expect((await refusal(admin.createEgressPool({ clusterId: "c1", name: "Office Moscow" }))).code).toBe(
      Code.AlreadyExists,
    );
    expect(
      (await refusal(admin.createEgressPool({ clusterId: "c1", name: "X", organizationIds: ["nope"] }))).code,
    ).toBe(Code.NotFound);
    const err = await refusal(admin.addEgressPoolMember({ egressPoolId: pool.id, nodeId: "n-1" }));
    expect(err.code).toBe(Code.FailedPrecondition);
    const egress = await admin.assignRole({ nodeId: "n-1", clusterId: "c1", role: "egress-node" });
    const added = await admin.addEgressPoolMember({ egressPoolId: pool.id, nodeId: "n-1", weight: 0 });
    expect(added.egressPool?.members).toMatchObject([{ nodeId: "n-1", weight: 100 }]);
    expect(
      (await refusal(admin.addEgressPoolMember({ egressPoolId: pool.id, nodeId: "n-1", weight: 2000 }))).code,
    ).toBe(Code.InvalidArgument);
    expect(
      (await refusal(admin.removeRole({ roleAssignmentId: egress.roleAssignment!.id }))).rawMessage,
    ).toMatch(/backs egress pool/);
    expect((await admin.listEgressPools({ organizationId: "o1" })).egressPools.map((p) => p.name)).toEqual([
      "Office Moscow",
    ]);
    expect(
      (await admin.removeEgressPoolMember({ egressPoolId: pool.id, nodeId: "n-1" })).egressPool?.members,
    ).toEqual([]);
  });
});

describe("workloads", () => {
  it("stores desired state with generations, and deletes it", async () => {
    const spec = {
      id: "kazan-rdp",
      clusterId: "c1",
      role: "rdp-worker",
      organizationId: "o1",
      runtime: Runtime.CONTAINER,
      environment: Environment.PRO,
      image: `registry.example/rdp@sha256:${"a".repeat(64)}`,
    };
    const created = await admin.putWorkload({ spec });
    expect(created).toMatchObject({ created: true, workload: { generation: 1n } });
    expect((await admin.putWorkload({ spec })).workload?.generation).toBe(1n);
    expect((await admin.putWorkload({ spec: { ...spec, env: { MODE: "fast" } } })).workload?.generation).toBe(
      2n,
    );
    expect((await refusal(admin.putWorkload({ spec: { ...spec, clusterId: "c2" } }))).rawMessage).toMatch(
      /cannot move/,
    );
    expect((await refusal(admin.putWorkload({ spec: { ...spec, nodeIds: ["n-1"] } }))).rawMessage).toMatch(
      /do not hold role/,
    );
    expect((await admin.listWorkloads({ organizationId: "o1" })).workloads.map((w) => w.spec?.id)).toEqual([
      "kazan-rdp",
    ]);
    await admin.putWorkload({ spec: { ...spec, id: "temp" } });
    await admin.deleteWorkload({ workloadId: "temp" });
    expect((await refusal(admin.getWorkload({ workloadId: "temp" }))).code).toBe(Code.NotFound);
  });
});

describe("audit", () => {
  it("filters by time window, and refuses a timestamp outside the valid range", async () => {
    const newest = (await admin.listAudit({ pageSize: 1 })).events[0]!;
    const at = newest.at!;
    const inWindow = await admin.listAudit({ since: at, until: { seconds: at.seconds + 1n, nanos: 0 } });
    expect(inWindow.events.map((e) => e.seq)).toContain(newest.seq);
    expect(inWindow.events.every((e) => e.at!.seconds >= at.seconds)).toBe(true);
    const after = await admin.listAudit({ since: { seconds: at.seconds + 3_600n, nanos: 0 } });
    expect(after.events).toEqual([]);
    const bad = await refusal(admin.listAudit({ since: { seconds: 944n, nanos: -1 } }));
    expect([bad.code, bad.rawMessage]).toEqual([
      Code.InvalidArgument,
      expect.stringMatching(/^since is not a valid timestamp/),
    ]);
  });

  it("records every mutation in its transaction, lists newest first with paging, and verifies clean", async () => {
    const all = [];
    let pageToken = "";
    do {
      const page = await admin.listAudit({ pageSize: 7, pageToken });
      all.push(...page.events);
      pageToken = page.nextPageToken;
    } while (pageToken);
    const seqs = all.map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => (a > b ? -1 : 1)));
    expect(new Set(seqs).size).toBe(seqs.length);
    const actions = new Set(all.filter((e) => e.outcome === AuditOutcome.SUCCESS).map((e) => e.action));
    for (const action of [
      "cluster.create",
      "organization.create",
      "node.register",
      "membership.create",
      "role_assignment.create",
      "role_assignment.remove",
      "role.create",
      "node_group.create",
      "node_group.delete",
      "membership.set_group",
      "membership.disable",
      "membership.enable",
      "egress_pool.create",
      "egress_pool.add_member",
      "egress_pool.remove_member",
      "workload.put",
      "workload.delete",
    ]) {
      expect(actions, action).toContain(action);
    }
    expect(all[0]).toMatchObject({ service: "registry", hash: expect.stringMatching(/^[0-9a-f]{64}$/) });
    const verified = await admin.verifyAudit({});
    expect(verified).toMatchObject({
      ok: true,
      rowsChecked: BigInt(all.length),
      lastSeq: BigInt(all.length),
    });
    expect(verified.headHash).toBe(all[0]!.hash);
    const range = await admin.verifyAudit({ fromSeq: 3n, toSeq: 5n });
    expect(range).toMatchObject({ ok: true, rowsChecked: 3n, lastSeq: 5n });
  });

  it("pinpoints a tampered row", async () => {
    const client = await f.pool.connect();
    try {
      await client.query("BEGIN");
      await client.query("SET LOCAL fabric.audit_maintenance = 'on'");
      await client.query("UPDATE audit_events SET actor_id = 'mallory' WHERE seq = 4");
      await client.query("COMMIT");
    } finally {
      client.release();
    }
    const result = await admin.verifyAudit({});
    expect(result).toMatchObject({ ok: false, firstBrokenSeq: 4n, rowsChecked: 3n, lastSeq: 3n });
    expect(result.problem).toMatch(/hash mismatch/);
    expect((await admin.verifyAudit({ fromSeq: 5n })).ok).toBe(true);
  });
});
