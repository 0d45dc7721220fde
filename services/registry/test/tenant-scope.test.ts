// Tenant binding, table-driven: two tenants side by side (cluster A serving organization X, cluster B
// serving Y, each with a node, a node group, a membership, a role assignment, a workload and an egress
// pool), and every RegistryService RPC whose request names an id called by every kind of principal. An
// admin gets through with a request naming its own side only: the same request with any one id swapped
// for the other side's object is refused (PermissionDenied, NotFound or FailedPrecondition), leaves every
// table as it was, answers nothing of the other side, and answers exactly as for an id that does not
// exist (save the few server-assigned ids listed per case). List filters may name anything: they only
// narrow what the caller may see anyway, so the other tenant's id finds what a missing one finds.
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { allows, fromPem, principalFromCertificate, type TlsCredentials } from "@fabric/platform";
import { Environment, PrincipalKind, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REGISTRY_POLICY } from "../src/policy.js";
import { startRegistry, type RegistryFixture } from "./support/registry-fixture.js";

type Registry = Client<typeof RegistryService>;
type Kind = "cluster" | "org" | "node" | "nodeGroup" | "membership" | "assignment" | "workload" | "pool";
type Side = Record<Kind, string> & { mark: string; ghost?: true };

/** Ids of objects that were never created: the answer to naming another tenant's object must match. */
const GHOST: Side = {
  cluster: "ghost-c",
  org: "ghost-o",
  node: "ghost-n",
  nodeGroup: "ng-ghost",
  membership: "m-ghost",
  assignment: "ra-ghost",
  workload: "ghost-w",
  pool: "ep-ghost",
  mark: "",
  ghost: true,
};

let f: RegistryFixture;
let admin: Registry;
let enrollment: Registry;
const sides = {} as Record<"A" | "B", Side>;
let counter = 0;
const unique = (prefix: string) => `${prefix}-${++counter}`;

const CAPABILITIES = ["can_run_rdp_worker", "can_egress_private_network", "can_route_mesh"];

async function freshNode(s: Side): Promise<{ node: string; membership: string }> {
  if (s.ghost) return { node: s.node, membership: s.membership };
  const node = unique(`n${s.cluster}`);
  const res = await enrollment.registerNode({
    nodeId: node,
    clusterId: s.cluster,
    joinRequestId: unique("jr"),
    capabilities: CAPABILITIES,
    grantedRoles: ["egress-node"],
    facts: { hostname: `host ${s.mark}` },
  });
  return { node, membership: res.membershipId };
}

async function freshGroup(s: Side): Promise<string> {
  if (s.ghost) return s.nodeGroup;
  return (await admin.createNodeGroup({ clusterId: s.cluster, name: unique(`g ${s.mark}`) })).nodeGroup!.id;
}

function workloadSpec(id: string, s: (k: Kind) => Side, pinned: string[] = []) {
  return {
    id,
    clusterId: s("cluster").cluster,
    role: "rdp-worker",
    organizationId: s("org").org,
    nodeIds: pinned,
    runtime: Runtime.NATIVE,
    environment: Environment.DEV,
    command: "/bin/true",
    labels: { owner: s("workload").mark || "ghost" },
  };
}

async function freshWorkload(s: Side): Promise<string> {
  if (s.ghost) return s.workload;
  const id = unique(`w${s.cluster}`);
  await admin.putWorkload({ spec: workloadSpec(id, () => s) });
  return id;
}

async function makeSide(name: "A" | "B", address: string): Promise<Side> {
  const mark = `MARK-${name}-${name === "A" ? "7f3c" : "91d2"}`;
  const cluster = `c${name.toLowerCase()}`;
  const org = `o${name.toLowerCase()}`;
  await admin.createCluster({ clusterId: cluster, name: `cluster ${mark}`, description: mark });
  await admin.createOrganization({ organizationId: org, name: `org ${mark}`, description: mark });
  const node = `n${name.toLowerCase()}`;
  const registered = await enrollment.registerNode({
    nodeId: node,
    clusterId: cluster,
    joinRequestId: `jr-${node}`,
    capabilities: CAPABILITIES,
    grantedRoles: ["egress-node"],
    facts: { hostname: `host ${mark}`, addresses: [address], labels: { site: mark } },
  });
  const group = await admin.createNodeGroup({ clusterId: cluster, name: `g-${name}`, description: mark });
  // The org-scoped assignment is what makes the cluster serve the organization.
  const assignment = await admin.assignRole({
    nodeId: node,
    clusterId: cluster,
    role: "rdp-worker",
    organizationId: org,
  });
  const side: Side = {
    mark,
    cluster,
    org,
    node,
    nodeGroup: group.nodeGroup!.id,
    membership: registered.membershipId,
    assignment: assignment.roleAssignment!.id,
    workload: `w${name.toLowerCase()}`,
    pool: "",
  };
  await admin.putWorkload({ spec: workloadSpec(side.workload, () => side) });
  const pool = await admin.createEgressPool({
    clusterId: cluster,
    name: `pool ${mark}`,
    description: mark,
    organizationIds: [org],
  });
  await admin.addEgressPoolMember({ egressPoolId: pool.egressPool!.id, nodeId: node });
  side.pool = pool.egressPool!.id;
  return side;
}

/**
 * One RPC: the kinds of id its request names, and a call naming, for each kind, the object of the side
 * `at(kind)` picks. `prepare` runs before the database is fingerprinted, so it may create the fresh objects
 * a destructive call consumes; `list` marks reads whose ids are only filters.
 */
interface Case {
  kinds: Kind[];
  list?: true;
  /**
   * Kinds whose out-of-scope answer may differ from the missing one: server-assigned ids (80 random
   * bits, so naming one means having been shown it) that the contract refuses with PermissionDenied, and
   * workload ids, one namespace across clusters (another cluster's id is taken; a missing one is free).
   */
  distinguishable?: Kind[];
  prepare(at: (k: Kind) => Side): Promise<(c: Registry) => Promise<unknown>>;
}

const call = (fn: (c: Registry) => Promise<unknown>) => Promise.resolve(fn);

const CASES: Partial<Record<keyof typeof RegistryService.method, Case>> = {
  getCluster: {
    kinds: ["cluster"],
    prepare: (at) => call((c) => c.getCluster({ clusterId: at("cluster").cluster })),
  },
  createNodeGroup: {
    kinds: ["cluster", "nodeGroup"],
    prepare: (at) =>
      call((c) =>
        c.createNodeGroup({
          clusterId: at("cluster").cluster,
          name: unique("g"),
          parentGroupId: at("nodeGroup").nodeGroup,
        }),
      ),
  },
  listNodeGroups: {
    kinds: ["cluster"],
    prepare: (at) => call((c) => c.listNodeGroups({ clusterId: at("cluster").cluster })),
  },
  deleteNodeGroup: {
    kinds: ["nodeGroup"],
    distinguishable: ["nodeGroup"],
    async prepare(at) {
      const group = await freshGroup(at("nodeGroup"));
      return (c) => c.deleteNodeGroup({ nodeGroupId: group });
    },
  },
  setNodeGroup: {
    kinds: ["node", "cluster", "nodeGroup"],
    async prepare(at) {
      const group = await freshGroup(at("nodeGroup"));
      return (c) =>
        c.setNodeGroup({ nodeId: at("node").node, clusterId: at("cluster").cluster, nodeGroupId: group });
    },
  },
  getNode: { kinds: ["node"], prepare: (at) => call((c) => c.getNode({ nodeId: at("node").node })) },
  listNodes: {
    kinds: ["cluster", "org", "nodeGroup"],
    list: true,
    prepare: (at) =>
      call((c) =>
        c.listNodes({
          clusterId: at("cluster").cluster,
          organizationId: at("org").org,
          nodeGroupId: at("nodeGroup").nodeGroup,
        }),
      ),
  },
  revokeNode: {
    kinds: ["node"],
    async prepare(at) {
      const { node } = await freshNode(at("node"));
      return (c) => c.revokeNode({ nodeId: node });
    },
  },
  listMemberships: {
    kinds: ["cluster", "node"],
    list: true,
    prepare: (at) =>
      call((c) => c.listMemberships({ clusterId: at("cluster").cluster, nodeId: at("node").node })),
  },
  disableMembership: {
    kinds: ["membership"],
    distinguishable: ["membership"],
    async prepare(at) {
      const { membership } = await freshNode(at("membership"));
      return (c) => c.disableMembership({ membershipId: membership, reason: "tenant test" });
    },
  },
  enableMembership: {
    kinds: ["membership"],
    distinguishable: ["membership"],
    async prepare(at) {
      const { membership } = await freshNode(at("membership"));
      if (!at("membership").ghost)
        await admin.disableMembership({ membershipId: membership, reason: "to enable" });
      return (c) => c.enableMembership({ membershipId: membership });
    },
  },
  assignRole: {
    kinds: ["node", "cluster", "org"],
    prepare: (at) =>
      call((c) =>
        c.assignRole({
          nodeId: at("node").node,
          clusterId: at("cluster").cluster,
          role: "rdp-worker",
          organizationId: at("org").org,
        }),
      ),
  },
  removeRole: {
    kinds: ["assignment"],
    distinguishable: ["assignment"],
    async prepare(at) {
      const s = at("assignment");
      let id = s.assignment;
      if (!s.ghost) {
        const { node } = await freshNode(s);
        id = (await admin.assignRole({ nodeId: node, clusterId: s.cluster, role: "rdp-worker" }))
          .roleAssignment!.id;
      }
      return (c) => c.removeRole({ roleAssignmentId: id });
    },
  },
  listRoleAssignments: {
    kinds: ["cluster", "node", "org"],
    list: true,
    prepare: (at) =>
      call((c) =>
        c.listRoleAssignments({
          clusterId: at("cluster").cluster,
          nodeId: at("node").node,
          organizationId: at("org").org,
        }),
      ),
  },
  putWorkload: {
    kinds: ["workload", "cluster", "org", "node"],
    distinguishable: ["workload"],
    prepare(at) {
      const id =
        at("workload") === at("cluster") ? unique(`w${at("cluster").cluster}`) : at("workload").workload;
      return call((c) => c.putWorkload({ spec: workloadSpec(id, at, [at("node").node]) }));
    },
  },
  getWorkload: {
    kinds: ["workload"],
    prepare: (at) => call((c) => c.getWorkload({ workloadId: at("workload").workload })),
  },
  listWorkloads: {
    kinds: ["cluster", "org"],
    list: true,
    prepare: (at) =>
      call((c) => c.listWorkloads({ clusterId: at("cluster").cluster, organizationId: at("org").org })),
  },
  deleteWorkload: {
    kinds: ["workload"],
    async prepare(at) {
      const id = await freshWorkload(at("workload"));
      return (c) => c.deleteWorkload({ workloadId: id });
    },
  },
  listWorkloadStatus: {
    kinds: ["cluster", "workload", "node"],
    list: true,
    prepare: (at) =>
      call((c) =>
        c.listWorkloadStatus({
          clusterId: at("cluster").cluster,
          workloadId: at("workload").workload,
          nodeId: at("node").node,
        }),
      ),
  },
  createEgressPool: {
    kinds: ["cluster", "org"],
    prepare: (at) =>
      call((c) =>
        c.createEgressPool({
          clusterId: at("cluster").cluster,
          name: unique("pool"),
          organizationIds: [at("org").org],
        }),
      ),
  },
  listEgressPools: {
    kinds: ["cluster", "org"],
    list: true,
    prepare: (at) =>
      call((c) => c.listEgressPools({ clusterId: at("cluster").cluster, organizationId: at("org").org })),
  },
  addEgressPoolMember: {
    kinds: ["pool", "node"],
    distinguishable: ["pool"],
    prepare: (at) =>
      call((c) =>
        c.addEgressPoolMember({ egressPoolId: at("pool").pool, nodeId: at("node").node, weight: 7 }),
      ),
  },
  removeEgressPoolMember: {
    kinds: ["pool", "node"],
    distinguishable: ["pool"],
    async prepare(at) {
      const s = at("pool");
      let pool = s.pool;
      let node = at("node").node;
      if (!s.ghost) {
        pool = (await admin.createEgressPool({ clusterId: s.cluster, name: unique("pool") })).egressPool!.id;
        // The member of the picked pool is a fresh node of the pool's side; naming the other side's node
        // instead asks to remove a node that is not in the pool.
        const member = await freshNode(s);
        await admin.addEgressPoolMember({ egressPoolId: pool, nodeId: member.node });
        if (at("node") === s) node = member.node;
      }
      return (c) => c.removeEgressPoolMember({ egressPoolId: pool, nodeId: node });
    },
  },
  listAudit: {
    kinds: ["cluster", "org", "node"],
    list: true,
    prepare: (at) =>
      call((c) =>
        c.listAudit({
          clusterId: at("cluster").cluster,
          organizationId: at("org").org,
          targetId: at("node").node,
        }),
      ),
  },
  getOrganization: {
    kinds: ["org"],
    prepare: (at) => call((c) => c.getOrganization({ organizationId: at("org").org })),
  },
  getOrgOverview: {
    kinds: ["org"],
    prepare: (at) => call((c) => c.getOrgOverview({ organizationId: at("org").org })),
  },
  listOrgEntryPoints: {
    kinds: ["org"],
    prepare: (at) => call((c) => c.listOrgEntryPoints({ organizationId: at("org").org })),
  },
  listOrgEgressPoints: {
    kinds: ["org"],
    prepare: (at) => call((c) => c.listOrgEgressPoints({ organizationId: at("org").org })),
  },
  listOrgWorkloads: {
    kinds: ["org"],
    prepare: (at) => call((c) => c.listOrgWorkloads({ organizationId: at("org").org })),
  },
};

interface Caller {
  label: string;
  client: Registry;
  principal: ReturnType<typeof principalFromCertificate>;
  /** The sides the caller administers. */
  own: ("A" | "B")[];
}
const callers: Caller[] = [];

async function caller(label: string, credentials: TlsCredentials, own: ("A" | "B")[]): Promise<Caller> {
  const principal = principalFromCertificate(
    fromPem(credentials.certificatePem, "CERTIFICATE"),
    f.pki.trustDomain,
  );
  return { label, client: f.client(credentials), principal, own };
}

/** Every registry table but the audit log (refusals are audited), as one digest per table. */
async function tables(): Promise<Record<string, string>> {
  const names = await f.pool.query<{ table_name: string }>(
    `SELECT table_name FROM information_schema.tables
     WHERE table_schema = 'registry' AND table_type = 'BASE TABLE' AND table_name NOT LIKE 'audit%'`,
  );
  const sql = names.rows
    .map(
      (r) =>
        `SELECT '${r.table_name}' AS t, md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS h FROM ${r.table_name} x`,
    )
    .join(" UNION ALL ");
  const { rows } = await f.pool.query<{ t: string; h: string }>(sql);
  return Object.fromEntries(rows.map((r) => [r.t, r.h]));
}

interface Answer {
  code: Code | "ok";
  text: string;
}

async function answer(fn: () => Promise<unknown>): Promise<Answer> {
  try {
    const res = await fn();
    return {
      code: "ok",
      text: JSON.stringify(res, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v)),
    };
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, text: e.rawMessage };
  }
}

const describeAnswer = (a: Answer) => (a.code === "ok" ? "ok" : `${Code[a.code]}: ${a.text}`);

beforeAll(async () => {
  f = await startRegistry();
  admin = f.client(f.admin);
  const enrollmentId = await f.pki.issue({ kind: "service", id: "enrollment" });
  enrollment = f.client(enrollmentId);
  sides.A = await makeSide("A", "10.61.0.1:7000");
  sides.B = await makeSide("B", "10.62.0.2:7000");
  // A host in both clusters (home A, attached to B by a platform-admin), in B's node group and serving X
  // in A: filters naming B's objects must not find it through its B membership.
  await enrollment.registerNode({
    nodeId: "nab",
    clusterId: "ca",
    joinRequestId: "jr-nab-a",
    capabilities: CAPABILITIES,
    facts: { hostname: `host ${sides.A.mark}` },
  });
  await enrollment.registerNode({
    nodeId: "nab",
    clusterId: "cb",
    joinRequestId: "jr-nab-b",
    capabilities: CAPABILITIES,
    facts: { hostname: `host ${sides.B.mark}` },
    approvedBy: { kind: PrincipalKind.ADMIN, id: "alice" },
  });
  await admin.setNodeGroup({ nodeId: "nab", clusterId: "cb", nodeGroupId: sides.B.nodeGroup });
  await admin.assignRole({ nodeId: "nab", clusterId: "ca", role: "rdp-worker", organizationId: "oa" });
  await admin.assignRole({ nodeId: "nab", clusterId: "cb", role: "rdp-worker", organizationId: "ob" });
  const issue = (init: Parameters<typeof f.pki.issue>[0]) => f.pki.issue(init);
  callers.push(
    await caller("platform-admin", f.admin, ["A", "B"]),
    await caller(
      "cluster-admin of A",
      await issue({ kind: "admin", id: "carla", grant: "cluster-admin", cluster: "ca" }),
      ["A"],
    ),
    await caller(
      "cluster-admin of B",
      await issue({ kind: "admin", id: "carlb", grant: "cluster-admin", cluster: "cb" }),
      ["B"],
    ),
    await caller(
      "org-admin of X",
      await issue({ kind: "admin", id: "olgax", grant: "org-admin", organization: "oa" }),
      ["A"],
    ),
    await caller(
      "org-admin of Y",
      await issue({ kind: "admin", id: "olgay", grant: "org-admin", organization: "ob" }),
      ["B"],
    ),
    await caller("node", await issue({ kind: "node", id: "na", cluster: "ca" }), []),
    await caller("user", await issue({ kind: "user", id: "dev01", organization: "oa" }), []),
    await caller("enrollment service", enrollmentId, []),
    await caller("router service", await issue({ kind: "service", id: "router" }), []),
  );
}, 60_000);

afterAll(async () => {
  await f?.close();
});

describe("tenant binding of every id a registry request names", () => {
  it("covers every RPC whose request names an id (RegisterNode and Session have tests of their own)", () => {
    const idFields = /(^|_)(id|ids)$/;
    const named = RegistryService.methods
      .filter((m) =>
        m.input.fields.some(
          (x) => idFields.test(x.name) || x.message?.fields.some((g) => idFields.test(g.name)),
        ),
      )
      .map((m) => m.localName);
    const elsewhere = ["registerNode", "session", "watchChanges", "createCluster", "createOrganization"];
    expect(named.filter((m) => !elsewhere.includes(m)).sort()).toEqual(Object.keys(CASES).sort());
  });

  for (const [rpc, tc] of Object.entries(CASES) as [keyof typeof RegistryService.method, Case][]) {
    it(
      `${rpc}: in scope passes, any id of the other tenant is refused as if it did not exist`,
      { timeout: 60_000 },
      async () => {
        const problems: string[] = [];
        for (const c of callers) {
          const admitted = allows(REGISTRY_POLICY[rpc], c.principal);
          for (const ownName of admitted ? c.own : ["A" as const]) {
            const own = sides[ownName];
            const run = await tc.prepare(() => own);
            const before = await tables();
            const result = await answer(() => run(c.client));
            if (!admitted) {
              if (result.code !== Code.PermissionDenied)
                problems.push(`${c.label}: ${describeAnswer(result)}`);
              const after = await tables();
              if (JSON.stringify(after) !== JSON.stringify(before))
                problems.push(`${c.label}: refused but changed`);
              continue;
            }
            if (result.code !== "ok") problems.push(`${c.label} on its own side: ${describeAnswer(result)}`);
          }
          if (!admitted || c.own.length !== 1) continue;
          const own = sides[c.own[0]!];
          const other = sides[c.own[0] === "A" ? "B" : "A"];
          for (const kind of tc.kinds) {
            const variant = async (swapped: Side) => {
              const run = await tc.prepare((k) => (k === kind ? swapped : own));
              const before = await tables();
              const result = await answer(() => run(c.client));
              const changed = JSON.stringify(await tables()) !== JSON.stringify(before);
              return { result, changed };
            };
            const victim = await variant(other);
            const what = `${c.label} naming the other tenant's ${kind}`;
            if (victim.changed)
              problems.push(`${what}: changed the database (${describeAnswer(victim.result)})`);
            if (victim.result.text.includes(other.mark)) problems.push(`${what}: answered with its data`);
            if (victim.result.code === "ok" && !tc.list) problems.push(`${what}: was not refused`);
            if (
              ![Code.PermissionDenied, Code.NotFound, Code.FailedPrecondition, "ok"].includes(
                victim.result.code,
              )
            ) {
              problems.push(`${what}: ${describeAnswer(victim.result)}`);
            }
            if (!tc.distinguishable?.includes(kind)) {
              const missing = await variant(GHOST);
              // Quoted values (the ids themselves, fresh ids) aside, the two answers must read the same.
              const same = (a: Answer) => `${String(a.code)} ${a.text.replace(/"[^"]*"/g, '"…"')}`;
              if (same(victim.result) !== same(missing.result)) {
                problems.push(
                  `${what}: answered "${describeAnswer(victim.result)}", but "${describeAnswer(missing.result)}" for one that does not exist`,
                );
              }
            }
          }
        }
        expect(problems).toEqual([]);
      },
    );
  }
});
