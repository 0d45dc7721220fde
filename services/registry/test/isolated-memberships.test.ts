// One host, several clusters, each through an isolated membership. Attaching an existing node to another
// cluster (RegisterNode with its id, after an approval) takes an approver whose scope covers every
// cluster the node is in — checked by the registry itself against the CA's record of the approver's
// grants, whatever enrollment checked — and changes nothing another cluster's membership holds: its
// capabilities, facts, roles and certificate. A session with one cluster's certificate reports for that
// membership only.
import { toJsonString } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { NodeSchema } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import type { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, eventually, refusal } from "./support/calls.js";
import { startRegistry, type RegistryFixture } from "./support/registry-fixture.js";
import { heartbeat, openSession } from "./support/sessions.js";

let f: RegistryFixture;
let admin: Client<typeof RegistryService>;
let enrollment: Client<typeof RegistryService>;
let adminOfA: Client<typeof RegistryService>;
let adminOfB: Client<typeof RegistryService>;

const VICTIM_FACTS = { hostname: "victim-host", region: "eu-central", addresses: ["10.1.0.1:7000"] };
const ATTACKER_FACTS = { hostname: "attacker-host", region: "us-east", addresses: ["10.66.6.6:7000"] };

/** Everything the registry stores, but the audit log. */
async function tables(): Promise<string> {
  const names = await f.pool.query<{ table_name: string }>(
    `SELECT table_name FROM information_schema.tables
     WHERE table_schema = 'registry' AND table_type = 'BASE TABLE' AND table_name NOT LIKE 'audit%'`,
  );
  const parts: string[] = [];
  for (const { table_name } of names.rows) {
    const { rows } = await f.pool.query(
      `SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS h FROM ${table_name} x`,
    );
    parts.push(`${table_name}:${rows[0].h}`);
  }
  return parts.join("\n");
}

/** The victim: node "victim", home cluster A, a relay with a certificate of its own. */
async function victim(id: string) {
  await enrollment.registerNode({
    nodeId: id,
    clusterId: "ca",
    joinRequestId: `jr-${id}-a`,
    capabilities: ["can_route_mesh"],
    grantedRoles: ["relay-node"],
    certificateSerial: "a1",
    facts: VICTIM_FACTS,
  });
}

/** A join into cluster B under the victim's id, reporting other capabilities and facts. */
const attachToB = (
  id: string,
  approver?: { kind: PrincipalKind; id: string },
  joinRequestId = `jr-${id}-b`,
) =>
  enrollment.registerNode({
    nodeId: id,
    clusterId: "cb",
    joinRequestId,
    capabilities: ["can_route_mesh", "can_egress_private_network"],
    grantedRoles: ["egress-node"],
    certificateSerial: "b2",
    facts: ATTACKER_FACTS,
    ...(approver ? { approvedBy: approver } : {}),
  });

beforeAll(async () => {
  f = await startRegistry({ FABRIC_CHANGE_COALESCE_MS: "60000" });
  admin = f.client(f.admin);
  enrollment = f.client(await f.pki.issue({ kind: "service", id: "enrollment" }));
  await admin.createCluster({ clusterId: "ca", name: "A" });
  await admin.createCluster({ clusterId: "cb", name: "B" });
  const a = await f.pki.issue({ kind: "admin", id: "carla", grant: "cluster-admin", cluster: "ca" });
  const b = await f.pki.issue({ kind: "admin", id: "carlb", grant: "cluster-admin", cluster: "cb" });
  // Both admins' certificates are on the CA's record; the registry asks the CA what they grant.
  f.ca.issued(a);
  f.ca.issued(b);
  adminOfA = f.client(a);
  adminOfB = f.client(b);
});
afterAll(async () => {
  await f?.close();
});

describe("attaching an existing node to another cluster", () => {
  it("is refused, changing nothing, unless the approver administers every cluster the node is in", async () => {
    await victim("victim");
    const before = await tables();
    const approvers = [
      undefined, // no approver named
      { kind: PrincipalKind.SERVICE, id: "enrollment" }, // an auto-approving token
      { kind: PrincipalKind.ADMIN, id: "carlb" }, // administers B, not the node's A
      { kind: PrincipalKind.ADMIN, id: "carla" }, // administers A, not B
      { kind: PrincipalKind.ADMIN, id: "mallory" }, // holds no certificate the CA knows of
    ];
    for (const [i, approver] of approvers.entries()) {
      const err = await refusal(attachToB("victim", approver, `jr-victim-b-${i}`));
      expect(err.code, JSON.stringify(approver)).toBe(Code.PermissionDenied);
    }
    expect(await tables()).toBe(before);
    const refused = await admin.listAudit({ actionPrefix: "node.register", targetId: "victim", outcome: 2 });
    expect(refused.events).toHaveLength(approvers.length);

    // While the CA cannot answer, nothing is decided: enrollment retries later.
    f.ca.failing = true;
    try {
      expect((await refusal(attachToB("victim", { kind: PrincipalKind.ADMIN, id: "alice" }))).code).toBe(
        Code.Unavailable,
      );
    } finally {
      f.ca.failing = false;
    }
    expect(await tables()).toBe(before);
  });

  it("by a platform-admin adds a membership of its own and leaves the other cluster's as it was", async () => {
    await victim("host");
    const inA = (await admin.getNode({ nodeId: "host" })).node!;
    const res = await attachToB("host", { kind: PrincipalKind.ADMIN, id: "alice" });
    expect(res.created).toBe(false);

    const node = (await admin.getNode({ nodeId: "host" })).node!;
    // The platform-wide picture is the home cluster's: what the join into B reported is not in it.
    expect(node.capabilities).toEqual(["can_route_mesh"]);
    expect(node.facts).toMatchObject(VICTIM_FACTS);
    const a = node.memberships.find((m) => m.clusterId === "ca")!;
    expect(a).toEqual(inA.memberships[0]);
    expect(a).toMatchObject({ roles: ["relay-node"], certificateSerial: "a1" });
    expect(node.memberships.find((m) => m.clusterId === "cb")).toMatchObject({
      roles: ["egress-node"],
      certificateSerial: "b2",
    });

    // Each cluster's admin sees the host as it joined that cluster, and only that membership.
    const seenByA = (await adminOfA.getNode({ nodeId: "host" })).node!;
    expect(seenByA.facts).toMatchObject(VICTIM_FACTS);
    expect(seenByA.capabilities).toEqual(["can_route_mesh"]);
    expect(seenByA.memberships.map((m) => m.clusterId)).toEqual(["ca"]);
    const seenByB = (await adminOfB.getNode({ nodeId: "host" })).node!;
    expect(seenByB.facts).toMatchObject(ATTACKER_FACTS);
    expect(seenByB.memberships.map((m) => m.clusterId)).toEqual(["cb"]);
    expect(toJsonString(NodeSchema, seenByA)).not.toContain("10.66.6.6");
    expect(toJsonString(NodeSchema, seenByB)).not.toContain("10.1.0.1");

    // A capability reported only through B authorizes roles in B, never in A.
    const err = await refusal(admin.assignRole({ nodeId: "host", clusterId: "ca", role: "egress-node" }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toMatch(/does not report can_egress_private_network/);
    await admin.assignRole({ nodeId: "host", clusterId: "cb", role: "egress-node" });
  });

  it("reports from a session with one cluster's certificate affect that membership only", async () => {
    await victim("shared");
    await attachToB("shared", { kind: PrincipalKind.ADMIN, id: "alice" });
    const homeBefore = (await admin.getNode({ nodeId: "shared" })).node!;
    const session = openSession(f.client(await f.pki.issue({ kind: "node", id: "shared", cluster: "cb" })));
    await session.waitAcked(session.send(heartbeat({ addresses: ["10.66.6.6:7001"], health: 3 })));
    // Cluster B sees its membership online, with what it reported...
    const seenByB = await eventually(async () => {
      const n = (await adminOfB.getNode({ nodeId: "shared" })).node!;
      return n.online ? n : undefined;
    });
    expect(seenByB.lastHeartbeat?.addresses).toEqual(["10.66.6.6:7001"]);
    expect(seenByB.memberships[0]?.lastSeenAt).toBeDefined();
    // ...while the node's home picture (what the router and cluster A use) did not move.
    const home = (await admin.getNode({ nodeId: "shared" })).node!;
    expect(home.online).toBe(false);
    expect(home.lastHeartbeat).toBeUndefined();
    expect(home.memberships.find((m) => m.clusterId === "ca")).toEqual(
      homeBefore.memberships.find((m) => m.clusterId === "ca"),
    );
    expect((await adminOfA.getNode({ nodeId: "shared" })).node?.online).toBe(false);
    const status = await f.pool.query("SELECT cluster_id FROM node_status WHERE node_id = 'shared'");
    expect(status.rows).toEqual([{ cluster_id: "cb" }]);
    await session.close();
  });
});
