// Organization isolation: over a fixture with core (relay) nodes, entry and egress nodes, workers and two
// organizations, an org-admin walks every RPC it may call and sees only its own organization's safe
// projections — no node ids or names, no core node addresses, nothing of the other organization — and
// every other RPC refuses it.
import { toJsonString } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { OrgStatus } from "@fabric/proto/fabric/registry/v1/org_view_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, codeOf, eventually } from "./support/calls.js";
import { startRegistry, type RegistryFixture } from "./support/registry-fixture.js";
import { heartbeat, openSession, type TestSession } from "./support/sessions.js";

let f: RegistryFixture;
let admin: Client<typeof RegistryService>;
let olga: Client<typeof RegistryService>;
const sessions: TestSession[] = [];

const NODES = [
  { id: "core-1", caps: ["can_route_mesh"], roles: [["relay-node", ""]], address: "10.9.0.1:7000" },
  { id: "core-2", caps: ["can_route_mesh"], roles: [["relay-node", ""]], address: "10.9.0.2:7000" },
  {
    id: "entry-shared",
    caps: ["can_accept_client_ingress"],
    roles: [["entry-node", ""]],
    address: "203.0.113.10:443",
  },
  {
    id: "entry-o2",
    caps: ["can_accept_client_ingress"],
    roles: [["entry-node", "o2"]],
    address: "203.0.113.20:443",
  },
  {
    id: "egress-o1",
    caps: ["can_egress_private_network"],
    roles: [["egress-node", ""]],
    address: "10.9.1.1:7000",
  },
  {
    id: "egress-o2",
    caps: ["can_egress_private_network"],
    roles: [["egress-node", ""]],
    address: "10.9.1.2:7000",
  },
  { id: "worker-o1", caps: ["can_run_rdp_worker"], roles: [["rdp-worker", "o1"]], address: "10.9.2.1:7000" },
  { id: "worker-o2", caps: ["can_run_rdp_worker"], roles: [["rdp-worker", "o2"]], address: "10.9.2.2:7000" },
];

/** Strings that must never reach an o1 org-admin. */
const FORBIDDEN = [
  ...NODES.map((n) => n.id),
  ...NODES.filter((n) => n.id !== "entry-shared").map((n) => n.address.split(":")[0]!),
  "o2",
  "Org Two",
  "w-o2",
  "w-platform",
  "Datacenter Kazan",
  "host-",
];

const DIGEST_IMAGE = `rdp@sha256:${"c".repeat(64)}`;

beforeAll(async () => {
  f = await startRegistry();
  admin = f.client(f.admin);
  olga = f.client(await f.pki.issue({ kind: "admin", id: "olga", grant: "org-admin", organization: "o1" }));
  const enrollment = f.client(await f.pki.issue({ kind: "service", id: "enrollment" }));
  await admin.createCluster({ clusterId: "c1", name: "Kazan", region: "eu-east" });
  await admin.createCluster({ clusterId: "c2", name: "Hidden" });
  await admin.createOrganization({ organizationId: "o1", name: "Org One" });
  await admin.createOrganization({ organizationId: "o2", name: "Org Two" });
  for (const n of NODES) {
    await enrollment.registerNode({
      nodeId: n.id,
      clusterId: "c1",
      joinRequestId: `jr-${n.id}`,
      capabilities: n.caps,
      facts: { hostname: `host-${n.id}`, addresses: [n.address] },
    });
    for (const [role, org] of n.roles)
      await admin.assignRole({ nodeId: n.id, clusterId: "c1", role, organizationId: org });
    const session = openSession(f.client(await f.pki.issue({ kind: "node", id: n.id, cluster: "c1" })));
    sessions.push(session);
    await session.waitAcked(session.send(heartbeat({ addresses: [n.address] })));
  }
  const o1Pool = await admin.createEgressPool({
    clusterId: "c1",
    name: "Office Moscow",
    description: "HQ exit",
    organizationIds: ["o1"],
  });
  const o2Pool = await admin.createEgressPool({
    clusterId: "c1",
    name: "Datacenter Kazan",
    organizationIds: ["o2"],
  });
  await admin.addEgressPoolMember({ egressPoolId: o1Pool.egressPool!.id, nodeId: "egress-o1" });
  await admin.addEgressPoolMember({ egressPoolId: o2Pool.egressPool!.id, nodeId: "egress-o2" });
  const workload = (id: string, org: string) => ({
    spec: {
      id,
      clusterId: "c1",
      role: "rdp-worker",
      organizationId: org,
      runtime: Runtime.CONTAINER,
      environment: Environment.PRO,
      image: DIGEST_IMAGE,
      env: { MODE: "fast" },
      stopGracePeriod: durationFromMs(5_000),
    },
  });
  await admin.putWorkload(workload("w-o1", "o1"));
  await admin.putWorkload(workload("w-o2", "o2"));
  await admin.putWorkload(workload("w-platform", ""));
  const worker = sessions[NODES.findIndex((n) => n.id === "worker-o1")]!;
  await worker.waitAcked(
    worker.send({
      case: "workloadStatus",
      value: { workloadId: "w-o1", generation: 1n, state: WorkloadState.HEALTHY },
    }),
  );
  await eventually(async () => {
    const res = await admin.listWorkloadStatus({ workloadId: "w-o1" });
    return res.statuses.length > 0 ? res : undefined;
  });
});

afterAll(async () => {
  for (const s of sessions) await s.close();
  await f?.close();
});

describe("organization views", () => {
  it("show an org-admin its own entry points, egress points and workloads with safe status", async () => {
    const overview = (await olga.getOrgOverview({})).overview!;
    expect(overview).toMatchObject({
      organizationId: "o1",
      name: "Org One",
      clusters: [{ clusterId: "c1", name: "Kazan" }],
      entryPointCount: 1,
      egressPointCount: 1,
      workloadCount: 1,
      workloadsAvailable: 1,
    });
    const entry = (await olga.listOrgEntryPoints({})).entryPoints;
    expect(entry).toMatchObject([
      { clusterId: "c1", address: "203.0.113.10:443", region: "eu-east", status: OrgStatus.AVAILABLE },
    ]);
    expect(entry[0]!.id).toMatch(/^ep-[0-9a-f]{24}$/);
    const egress = (await olga.listOrgEgressPoints({})).egressPoints;
    expect(egress).toMatchObject([
      { name: "Office Moscow", description: "HQ exit", status: OrgStatus.AVAILABLE },
    ]);
    const workloads = (await olga.listOrgWorkloads({})).workloads;
    expect(workloads).toMatchObject([
      {
        workloadId: "w-o1",
        role: "rdp-worker",
        status: OrgStatus.AVAILABLE,
        instancesDesired: 1,
        instancesReady: 1,
      },
    ]);
  });

  it("leak nothing outside the organization: no nodes, no core addresses, no other organization", async () => {
    const seen: string[] = [];
    const record = (
      schema: Parameters<typeof toJsonString>[0],
      message: Parameters<typeof toJsonString>[1],
    ) => seen.push(toJsonString(schema, message));
    const m = RegistryService.method;
    record(m.getOrgOverview.output, await olga.getOrgOverview({ organizationId: "o1" }));
    record(m.listOrgEntryPoints.output, await olga.listOrgEntryPoints({ organizationId: "o1" }));
    record(m.listOrgEgressPoints.output, await olga.listOrgEgressPoints({ organizationId: "o1" }));
    record(m.listOrgWorkloads.output, await olga.listOrgWorkloads({ organizationId: "o1" }));
    record(m.getOrganization.output, await olga.getOrganization({ organizationId: "o1" }));
    record(m.listAudit.output, await olga.listAudit({ pageSize: 1000 }));
    const everything = seen.join("\n");
    for (const secret of FORBIDDEN)
      expect(everything, `"${secret}" reached the org-admin`).not.toContain(secret);
    // the platform-admin's view of the same organization is the same projection
    const platformView = await admin.listOrgEntryPoints({ organizationId: "o2" });
    expect(platformView.entryPoints.map((e) => e.address).sort()).toEqual([
      "203.0.113.10:443",
      "203.0.113.20:443",
    ]);
    // ids are per organization: the shared entry node is not correlatable across organizations
    const o1Id = (await olga.listOrgEntryPoints({})).entryPoints[0]!.id;
    expect(platformView.entryPoints.map((e) => e.id)).not.toContain(o1Id);
  });

  it("refuse the org-admin every RPC that is not an organization view", async () => {
    const allowed = new Set([
      "getOrgOverview",
      "listOrgEntryPoints",
      "listOrgEgressPoints",
      "listOrgWorkloads",
      "getOrganization",
      "listAudit",
    ]);
    const client = olga as unknown as Record<string, (req: unknown) => unknown>;
    for (const method of Object.values(RegistryService.method)) {
      if (allowed.has(method.localName)) continue;
      let call: Promise<unknown>;
      if (method.methodKind === "unary") call = client[method.localName]!({}) as Promise<unknown>;
      else {
        const stream = client[method.localName]!(
          method.methodKind === "bidi_streaming" ? (async function* () {})() : {},
        );
        call = (async () => {
          for await (const _ of stream as AsyncIterable<unknown>) return;
        })();
      }
      expect(await codeOf(call), method.name).toBe(Code.PermissionDenied);
    }
  });

  it("show a status change of a backing node as degraded, never the node", async () => {
    const egress = sessions[NODES.findIndex((n) => n.id === "egress-o1")]!;
    await egress.waitAcked(egress.send(heartbeat({ health: 2 })));
    await eventually(async () => {
      const points = (await olga.listOrgEgressPoints({})).egressPoints;
      return points[0]?.status === OrgStatus.DEGRADED ? points : undefined;
    });
  });
});
