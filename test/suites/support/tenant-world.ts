// Two tenants side by side in one Fabric, for attacks across the boundary: a "home" side the attacker
// legitimately administers or belongs to, and a "victim" side it must never reach. Every object of each
// side exists for real (created through the services as a platform-admin and as the enrollment service),
// so an id the attacker names always points at something that could be harmed or leaked.
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { inspectCertificate, type TlsCredentials } from "@fabric/platform";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import type { Fabric } from "../../harness/fabric.js";
import { clientAs } from "./callers.js";
import { makeCsr } from "./csrs.js";

/**
 * Written into every victim name, description, hostname and label — never into an id, which the attacker
 * may name itself. A response to an attacker that contains it has leaked the victim's data.
 */
export const MARK = "CONFIDENTIAL";

/** The ids of one tenant's objects. */
export interface Side {
  cluster: string;
  org: string;
  node: string;
  nodeGroup: string;
  membership: string;
  assignment: string;
  workload: string;
  pool: string;
  tokenId: string;
  /** The whole join token, `<id>.<secret>`. */
  token: string;
  joinRequest: string;
  developer: string;
  /** Serial of the node's certificate. */
  serial: string;
  /** The node's own identity (for node attackers and Session/Watch). */
  nodeCredentials: TlsCredentials;
  /** A developer of the side's organization. */
  userCredentials: TlsCredentials;
}

const DIGEST_IMAGE = `app@sha256:${"d".repeat(64)}`;

async function makeSide(fabric: Fabric, prefix: "home" | "victim"): Promise<Side> {
  const secret = prefix === "victim";
  const text = (what: string) => (secret ? `${what} ${MARK}` : `${what} of home`);
  const registry = fabric.client(RegistryService, "registry");
  const asEnrollment = fabric.client(RegistryService, "registry", fabric.serviceIdentity("enrollment"));
  const enrollment = fabric.client(EnrollmentService, "enrollment");
  const anonymous = clientAs(fabric, EnrollmentService, "enrollment", {
    caBundlePem: fabric.admin.caBundlePem,
  });
  const cluster = `${prefix}-c`;
  const org = `${prefix}-o`;
  const node = `${prefix}-n`;
  await registry.createCluster({ clusterId: cluster, name: text("cluster"), description: text("about") });
  await registry.createOrganization({ organizationId: org, name: text("org"), description: text("about") });
  await asEnrollment.registerNode({
    nodeId: node,
    nodeName: text("node"),
    clusterId: cluster,
    joinRequestId: `jr-${node}`,
    capabilities: ["can_run_rdp_worker", "can_egress_private_network", "can_route_mesh"],
    facts: { hostname: text("host"), addresses: [secret ? "10.66.6.6:7000" : "10.1.1.1:7000"] },
  });
  const group = await registry.createNodeGroup({
    clusterId: cluster,
    name: `${prefix}-g`,
    description: text("group"),
  });
  const assigned = await registry.assignRole({
    nodeId: node,
    clusterId: cluster,
    role: "rdp-worker",
    organizationId: org,
  });
  const memberships = await registry.listMemberships({ clusterId: cluster, nodeId: node });
  await registry.putWorkload({
    spec: {
      id: `${prefix}-w`,
      clusterId: cluster,
      role: "rdp-worker",
      organizationId: org,
      runtime: Runtime.CONTAINER,
      environment: Environment.PRO,
      image: DIGEST_IMAGE,
      labels: { owner: text("team") },
      stopGracePeriod: durationFromMs(5_000),
    },
  });
  const pool = await registry.createEgressPool({
    clusterId: cluster,
    name: text("pool"),
    organizationIds: [org],
  });
  await registry.assignRole({ nodeId: node, clusterId: cluster, role: "egress-node", organizationId: "" });
  await registry.addEgressPoolMember({ egressPoolId: pool.egressPool!.id, nodeId: node });
  const token = await enrollment.createJoinToken({
    clusterId: cluster,
    allowedRoles: ["relay-node"],
    maxUses: 10,
    description: text("token"),
  });
  const joined = await anonymous.join({
    token: token.token,
    csrPem: (await makeCsr("p256")).csrPem,
    nodeName: `${prefix}-joiner`,
    facts: { hostname: text("joiner") },
    capabilities: ["can_route_mesh"],
    requestedRoles: ["relay-node"],
  });
  await enrollment.issueDeveloperPin({ developerId: `${prefix}-dev`, organizationId: org });
  const nodeCredentials = await fabric.issue({ kind: "node", id: node, cluster, grant: "rdp-worker" });
  const userCredentials = await fabric.issue({
    kind: "user",
    id: `${prefix}-user`,
    organization: org,
    grant: "developer",
  });
  return {
    cluster,
    org,
    node,
    nodeGroup: group.nodeGroup!.id,
    membership: memberships.memberships[0]!.id,
    assignment: assigned.roleAssignment!.id,
    workload: `${prefix}-w`,
    pool: pool.egressPool!.id,
    tokenId: token.joinToken!.id,
    token: token.token,
    joinRequest: joined.joinRequestId,
    developer: `${prefix}-dev`,
    serial: inspectCertificate(nodeCredentials.certificatePem).serialHex,
    nodeCredentials,
    userCredentials,
  };
}

export interface World {
  home: Side;
  victim: Side;
}

export async function buildWorld(fabric: Fabric): Promise<World> {
  const home = await makeSide(fabric, "home");
  const victim = await makeSide(fabric, "victim");
  return { home, victim };
}
