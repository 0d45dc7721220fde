// Every RegistryService RPC, called by every kind of principal: the kinds the contract names get through
// (and succeed), every other kind is refused with PermissionDenied. Admins are also narrowed to their
// cluster or organization.
import type { Client } from "@connectrpc/connect";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import type { TlsCredentials } from "@fabric/platform";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, codeOf, refusal } from "./support/calls.js";
import { startRegistry, type RegistryFixture } from "./support/registry-fixture.js";

type Who = "platform" | "cluster" | "org" | "node" | "user" | "enrollment" | "router" | "ca" | "registry";
const EVERYONE: Who[] = [
  "platform",
  "cluster",
  "org",
  "node",
  "user",
  "enrollment",
  "router",
  "ca",
  "registry",
];
type Registry = Client<typeof RegistryService>;

let f: RegistryFixture;
const ids = {} as Record<Who, TlsCredentials>;
const clients = {} as Record<Who, Registry>;
let admin: Registry;
let enrollment: Registry;
let counter = 0;
const unique = (prefix: string) => `${prefix}-${++counter}`;

/** A fresh node in c1 with the capabilities every test role needs. */
async function freshNode(): Promise<string> {
  const id = unique("n");
  await enrollment.registerNode({
    nodeId: id,
    clusterId: "c1",
    joinRequestId: unique("jr"),
    capabilities: ["can_egress_private_network", "can_run_rdp_worker"],
    grantedRoles: ["egress-node"],
  });
  return id;
}

/** The first message of a stream (then the stream is abandoned). */
async function firstOf(stream: AsyncIterable<unknown>): Promise<unknown> {
  for await (const message of stream) return message;
  return undefined;
}

async function* oneHeartbeat() {
  yield { seq: 1n, payload: { case: "heartbeat" as const, value: { health: 1 } } };
  await new Promise((r) => setTimeout(r, 1_000));
}

const DIGEST_IMAGE = `app@sha256:${"b".repeat(64)}`;

/** Each RPC: who may call it, and a call that succeeds for an allowed caller. */
const RPCS: Record<
  keyof typeof RegistryService.method,
  { allowed: Who[]; call: (c: Registry) => Promise<unknown> }
> = {
  createCluster: { allowed: ["platform"], call: (c) => c.createCluster({ name: "x" }) },
  getCluster: { allowed: ["platform", "cluster"], call: (c) => c.getCluster({ clusterId: "c1" }) },
  listClusters: { allowed: ["platform", "cluster"], call: (c) => c.listClusters({}) },
  createOrganization: { allowed: ["platform"], call: (c) => c.createOrganization({ name: "x" }) },
  getOrganization: {
    allowed: ["platform", "cluster", "org"],
    call: (c) => c.getOrganization({ organizationId: "o1" }),
  },
  listOrganizations: { allowed: ["platform", "cluster"], call: (c) => c.listOrganizations({}) },
  createNodeGroup: {
    allowed: ["platform", "cluster"],
    call: (c) => c.createNodeGroup({ clusterId: "c1", name: unique("g") }),
  },
  listNodeGroups: { allowed: ["platform", "cluster"], call: (c) => c.listNodeGroups({ clusterId: "c1" }) },
  deleteNodeGroup: {
    allowed: ["platform", "cluster"],
    call: async (c) => {
      const g = await admin.createNodeGroup({ clusterId: "c1", name: unique("g") });
      return c.deleteNodeGroup({ nodeGroupId: g.nodeGroup!.id });
    },
  },
  setNodeGroup: {
    allowed: ["platform", "cluster"],
    call: async (c) => {
      const g = await admin.createNodeGroup({ clusterId: "c1", name: unique("g") });
      return c.setNodeGroup({ nodeId: "n-base", clusterId: "c1", nodeGroupId: g.nodeGroup!.id });
    },
  },
  registerNode: {
    allowed: ["enrollment"],
    call: (c) => c.registerNode({ nodeId: unique("n"), clusterId: "c1", joinRequestId: unique("jr") }),
  },
  getNode: { allowed: ["platform", "cluster", "enrollment"], call: (c) => c.getNode({ nodeId: "n-base" }) },
  listNodes: { allowed: ["platform", "cluster"], call: (c) => c.listNodes({}) },
  revokeNode: { allowed: ["platform"], call: async (c) => c.revokeNode({ nodeId: await freshNode() }) },
  listMemberships: { allowed: ["platform", "cluster"], call: (c) => c.listMemberships({}) },
  disableMembership: {
    allowed: ["platform", "cluster"],
    call: async (c) => {
      const node = (await admin.getNode({ nodeId: await freshNode() })).node!;
      return c.disableMembership({ membershipId: node.memberships[0]!.id, reason: "test" });
    },
  },
  enableMembership: {
    allowed: ["platform", "cluster"],
    call: async (c) => {
      const node = (await admin.getNode({ nodeId: await freshNode() })).node!;
      await admin.disableMembership({ membershipId: node.memberships[0]!.id, reason: "test" });
      return c.enableMembership({ membershipId: node.memberships[0]!.id });
    },
  },
  listCapabilities: { allowed: ["platform", "cluster"], call: (c) => c.listCapabilities({}) },
  createRole: { allowed: ["platform"], call: (c) => c.createRole({ name: unique("role") }) },
  listRoles: { allowed: ["platform", "cluster"], call: (c) => c.listRoles({}) },
  assignRole: {
    allowed: ["platform", "cluster"],
    call: async (c) => c.assignRole({ nodeId: await freshNode(), clusterId: "c1", role: "rdp-worker" }),
  },
  removeRole: {
    allowed: ["platform", "cluster"],
    call: async (c) => {
      const a = await admin.assignRole({ nodeId: await freshNode(), clusterId: "c1", role: "rdp-worker" });
      return c.removeRole({ roleAssignmentId: a.roleAssignment!.id });
    },
  },
  listRoleAssignments: { allowed: ["platform", "cluster"], call: (c) => c.listRoleAssignments({}) },
  putWorkload: {
    allowed: ["platform", "cluster"],
    call: (c) =>
      c.putWorkload({
        spec: {
          id: unique("w"),
          clusterId: "c1",
          role: "rdp-worker",
          runtime: Runtime.CONTAINER,
          environment: Environment.PRO,
          image: DIGEST_IMAGE,
        },
      }),
  },
  getWorkload: { allowed: ["platform", "cluster"], call: (c) => c.getWorkload({ workloadId: "w-base" }) },
  listWorkloads: { allowed: ["platform", "cluster"], call: (c) => c.listWorkloads({}) },
  deleteWorkload: {
    allowed: ["platform", "cluster"],
    call: async (c) => {
      const id = unique("w");
      await admin.putWorkload({
        spec: {
          id,
          clusterId: "c1",
          role: "rdp-worker",
          runtime: Runtime.NATIVE,
          environment: Environment.DEV,
          command: "/bin/true",
        },
      });
      return c.deleteWorkload({ workloadId: id });
    },
  },
  listWorkloadStatus: { allowed: ["platform", "cluster"], call: (c) => c.listWorkloadStatus({}) },
  createEgressPool: {
    allowed: ["platform", "cluster"],
    call: (c) => c.createEgressPool({ clusterId: "c1", name: unique("pool") }),
  },
  listEgressPools: { allowed: ["platform", "cluster"], call: (c) => c.listEgressPools({}) },
  addEgressPoolMember: {
    allowed: ["platform", "cluster"],
    call: async (c) => {
      const p = await admin.createEgressPool({ clusterId: "c1", name: unique("pool") });
      return c.addEgressPoolMember({ egressPoolId: p.egressPool!.id, nodeId: await freshNode() });
    },
  },
  removeEgressPoolMember: {
    allowed: ["platform", "cluster"],
    call: async (c) => {
      const p = await admin.createEgressPool({ clusterId: "c1", name: unique("pool") });
      const node = await freshNode();
      await admin.addEgressPoolMember({ egressPoolId: p.egressPool!.id, nodeId: node });
      return c.removeEgressPoolMember({ egressPoolId: p.egressPool!.id, nodeId: node });
    },
  },
  listAudit: { allowed: ["platform", "cluster", "org"], call: (c) => c.listAudit({}) },
  verifyAudit: { allowed: ["platform"], call: (c) => c.verifyAudit({}) },
  getOrgOverview: {
    allowed: ["platform", "org", "enrollment"],
    call: (c) => c.getOrgOverview({ organizationId: "o1" }),
  },
  listOrgEntryPoints: {
    allowed: ["platform", "org"],
    call: (c) => c.listOrgEntryPoints({ organizationId: "o1" }),
  },
  listOrgEgressPoints: {
    allowed: ["platform", "org"],
    call: (c) => c.listOrgEgressPoints({ organizationId: "o1" }),
  },
  listOrgWorkloads: {
    allowed: ["platform", "org"],
    call: (c) => c.listOrgWorkloads({ organizationId: "o1" }),
  },
  session: { allowed: ["node"], call: (c) => firstOf(c.session(oneHeartbeat())) },
  watchChanges: { allowed: ["router"], call: (c) => firstOf(c.watchChanges({})) },
};

beforeAll(async () => {
  f = await startRegistry();
  ids.platform = f.admin;
  ids.cluster = await f.pki.issue({ kind: "admin", id: "carl", grant: "cluster-admin", cluster: "c1" });
  ids.org = await f.pki.issue({ kind: "admin", id: "olga", grant: "org-admin", organization: "o1" });
  ids.node = await f.pki.issue({ kind: "node", id: "n-base", cluster: "c1" });
  ids.user = await f.pki.issue({ kind: "user", id: "dev01" });
  for (const s of ["enrollment", "router", "ca", "registry"] as const)
    ids[s] = await f.pki.issue({ kind: "service", id: s });
  for (const who of EVERYONE) clients[who] = f.client(ids[who]);
  admin = clients.platform;
  enrollment = clients.enrollment;
  await admin.createCluster({ clusterId: "c1", name: "One" });
  await admin.createCluster({ clusterId: "c2", name: "Two" });
  await admin.createOrganization({ organizationId: "o1", name: "Org One" });
  await admin.createOrganization({ organizationId: "o2", name: "Org Two" });
  await enrollment.registerNode({
    nodeId: "n-base",
    clusterId: "c1",
    joinRequestId: "jr-base",
    capabilities: ["can_run_rdp_worker"],
    grantedRoles: ["rdp-worker"],
  });
  await enrollment.registerNode({ nodeId: "n-other", clusterId: "c2", joinRequestId: "jr-other" });
  await admin.putWorkload({
    spec: {
      id: "w-base",
      clusterId: "c1",
      role: "rdp-worker",
      runtime: Runtime.NATIVE,
      environment: Environment.DEV,
      command: "/bin/true",
    },
  });
  // c1 serves o1: a cluster-admin reads only the organizations its cluster serves.
  await admin.assignRole({ nodeId: "n-base", clusterId: "c1", role: "rdp-worker", organizationId: "o1" });
  await admin.putWorkload({
    spec: {
      id: "w-other",
      clusterId: "c2",
      role: "rdp-worker",
      runtime: Runtime.NATIVE,
      environment: Environment.DEV,
      command: "/bin/true",
    },
  });
});
afterAll(async () => {
  await f?.close();
});

describe("the policy table, from both sides", () => {
  it("covers every RPC of the contract", () => {
    expect(Object.keys(RPCS).sort()).toEqual(Object.keys(RegistryService.method).sort());
  });

  for (const [method, rpc] of Object.entries(RPCS)) {
    it(`${method}: ${rpc.allowed.join(", ")} pass; everyone else is refused`, async () => {
      for (const who of EVERYONE) {
        const code = await codeOf(rpc.call(clients[who]));
        if (rpc.allowed.includes(who)) expect(code, `${who} calling ${method}`).toBe("ok");
        else expect(code, `${who} calling ${method}`).toBe(Code.PermissionDenied);
      }
    });
  }
});

describe("admins are narrowed to their cluster or organization", () => {
  it("a cluster-admin cannot reach another cluster", async () => {
    const carl = clients.cluster;
    expect((await refusal(carl.getCluster({ clusterId: "c2" }))).code).toBe(Code.PermissionDenied);
    expect((await refusal(carl.listNodes({ clusterId: "c2" }))).code).toBe(Code.PermissionDenied);
    expect((await carl.listClusters({})).clusters.map((c) => c.id)).toEqual(["c1"]);
    expect((await carl.listNodes({})).nodes.map((n) => n.id)).not.toContain("n-other");
    // objects of other clusters look as if they did not exist
    expect((await refusal(carl.getNode({ nodeId: "n-other" }))).code).toBe(Code.NotFound);
    expect((await refusal(carl.getWorkload({ workloadId: "w-other" }))).code).toBe(Code.NotFound);
    expect((await refusal(carl.createNodeGroup({ clusterId: "c2", name: "g" }))).code).toBe(
      Code.PermissionDenied,
    );
    const other = (await admin.getNode({ nodeId: "n-other" })).node!.memberships[0]!;
    expect((await refusal(carl.disableMembership({ membershipId: other.id, reason: "x" }))).code).toBe(
      Code.PermissionDenied,
    );
    expect(
      (
        await refusal(
          carl.putWorkload({
            spec: {
              id: "w-other",
              clusterId: "c2",
              role: "rdp-worker",
              runtime: Runtime.NATIVE,
              environment: Environment.DEV,
              command: "x",
            },
          }),
        )
      ).code,
    ).toBe(Code.PermissionDenied);
    // the refused attempt is audited
    const refused = await admin.listAudit({ actorId: "carl", outcome: 2 });
    expect(refused.events.length).toBeGreaterThan(0);
    // and its audit view is its own cluster's
    expect((await refusal(carl.listAudit({ clusterId: "c2" }))).code).toBe(Code.PermissionDenied);
    expect((await carl.listAudit({ pageSize: 1000 })).events.every((e) => e.clusterId === "c1")).toBe(true);
  });

  it("a cluster-admin certificate without a cluster is refused", async () => {
    const stray = f.client(await f.pki.issue({ kind: "admin", id: "stray", grant: "cluster-admin" }));
    expect((await refusal(stray.listNodes({}))).rawMessage).toMatch(/no cluster in its certificate/);
  });

  it("an org-admin cannot see another organization", async () => {
    const olga = clients.org;
    expect((await refusal(olga.getOrgOverview({ organizationId: "o2" }))).code).toBe(Code.PermissionDenied);
    expect((await refusal(olga.getOrganization({ organizationId: "o2" }))).code).toBe(Code.PermissionDenied);
    expect((await refusal(olga.listAudit({ organizationId: "o2" }))).code).toBe(Code.PermissionDenied);
    expect((await olga.getOrgOverview({})).overview?.organizationId).toBe("o1");
  });
});
