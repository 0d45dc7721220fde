import { create, fromBinary } from "@bufbuild/protobuf";
import { DurationSchema, type Duration } from "@bufbuild/protobuf/wkt";
import { NodeFactsSchema } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { WorkloadSpecSchema, type WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { ProbeStatsSchema } from "@fabric/proto/fabric/registry/v1/changes_pb.js";
import { EgressPoolMemberSchema, EgressPoolSchema } from "@fabric/proto/fabric/registry/v1/egress_pb.js";
import {
  CapabilitySchema,
  ClusterSchema,
  MembershipSchema,
  NodeGroupSchema,
  NodeSchema,
  OrganizationSchema,
  RoleAssignmentSchema,
  RoleSchema,
  type Membership,
} from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import { HeartbeatSchema, type NodeHealth } from "@fabric/proto/fabric/registry/v1/session_pb.js";
import { WorkloadSchema, WorkloadStatusSchema } from "@fabric/proto/fabric/registry/v1/workload_pb.js";
import { MEMBERSHIP_STATES, NODE_STATES, labelsOf, principalRef, ts } from "./convert.js";
import type { EntityKind, EntityTypes } from "./entities.js";
import type { Sql } from "./sql.js";

/**
 * The one mapping from tables to entity messages. Each loader reads the entities with the given keys,
 * or all of them when keys is null: the change writer uses it to capture an entity as of a change, and
 * the model uses it once at start to load everything.
 */
export type Loader<K extends EntityKind> = (sql: Sql, keys: string[] | null) => Promise<EntityTypes[K][]>;

/** Microseconds as a Duration, keeping sub-millisecond precision. */
export function durationFromUs(us: number): Duration {
  const whole = Math.max(0, Math.round(us));
  return create(DurationSchema, { seconds: BigInt(Math.floor(whole / 1e6)), nanos: (whole % 1e6) * 1000 });
}

const splitKeys = (keys: string[] | null, parts: number): (string[] | null)[] =>
  Array.from({ length: parts }, (_, i) => (keys ? keys.map((k) => k.split("/")[i] ?? "") : null));

const clusters: Loader<"cluster"> = async (sql, keys) => {
  const { rows } = await sql.query(
    `SELECT id, name, description, region, labels, created_at, updated_at FROM clusters
     WHERE ($1::text[] IS NULL OR id = ANY($1))`,
    [keys],
  );
  return rows.map((r) =>
    create(ClusterSchema, {
      id: r.id,
      name: r.name,
      description: r.description,
      region: r.region,
      labels: labelsOf(r.labels),
      createdAt: ts(r.created_at),
      updatedAt: ts(r.updated_at),
    }),
  );
};

const organizations: Loader<"organization"> = async (sql, keys) => {
  const { rows } = await sql.query(
    `SELECT id, name, description, labels, created_at, updated_at FROM organizations
     WHERE ($1::text[] IS NULL OR id = ANY($1))`,
    [keys],
  );
  return rows.map((r) =>
    create(OrganizationSchema, {
      id: r.id,
      name: r.name,
      description: r.description,
      labels: labelsOf(r.labels),
      createdAt: ts(r.created_at),
      updatedAt: ts(r.updated_at),
    }),
  );
};

const nodeGroups: Loader<"node_group"> = async (sql, keys) => {
  const { rows } = await sql.query(
    `SELECT id, cluster_id, name, parent_group_id, description, created_at FROM node_groups
     WHERE ($1::text[] IS NULL OR id = ANY($1))`,
    [keys],
  );
  return rows.map((r) =>
    create(NodeGroupSchema, {
      id: r.id,
      clusterId: r.cluster_id,
      name: r.name,
      parentGroupId: r.parent_group_id ?? "",
      description: r.description,
      createdAt: ts(r.created_at),
    }),
  );
};

/** Memberships by id, or all memberships of the given nodes; roles come from the role assignments. */
async function loadMemberships(
  sql: Sql,
  ids: string[] | null,
  nodeIds: string[] | null,
): Promise<Membership[]> {
  const { rows } = await sql.query(
    `SELECT m.id, m.node_id, m.cluster_id, m.state, m.node_group_id, m.certificate_serial,
            m.certificate_not_after, m.joined_at, m.last_seen_at, m.disabled_at, m.disabled_reason,
            ARRAY(SELECT DISTINCT ra.role FROM role_assignments ra
                  WHERE ra.node_id = m.node_id AND ra.cluster_id = m.cluster_id ORDER BY 1) AS roles
     FROM memberships m
     WHERE ($1::text[] IS NULL OR m.id = ANY($1)) AND ($2::text[] IS NULL OR m.node_id = ANY($2))
     ORDER BY m.cluster_id, m.node_id`,
    [ids, nodeIds],
  );
  return rows.map((r) =>
    create(MembershipSchema, {
      id: r.id,
      nodeId: r.node_id,
      clusterId: r.cluster_id,
      state: MEMBERSHIP_STATES[r.state],
      nodeGroupId: r.node_group_id ?? "",
      roles: r.roles,
      certificateSerial: r.certificate_serial,
      certificateNotAfter: ts(r.certificate_not_after),
      joinedAt: ts(r.joined_at),
      lastSeenAt: ts(r.last_seen_at),
      disabledAt: ts(r.disabled_at),
      disabledReason: r.disabled_reason,
    }),
  );
}

const memberships: Loader<"membership"> = (sql, keys) => loadMemberships(sql, keys, null);

/** What a node reported through one membership: join facts, capabilities, the latest heartbeat. */
const HOST_COLUMNS = `m.facts, m.capabilities, s.online, s.health, s.heartbeat, s.addresses, s.last_heartbeat_at`;

function hostFields(r: Record<string, unknown>) {
  return {
    facts: r.facts ? fromBinary(NodeFactsSchema, r.facts as Uint8Array) : undefined,
    capabilities: (r.capabilities as string[] | null) ?? [],
    online: (r.online as boolean | null) ?? false,
    health: ((r.health as number | null) ?? 0) as NodeHealth,
    // The stored addresses are the last non-empty set reported (a heartbeat without them keeps them).
    lastHeartbeat: r.heartbeat
      ? { ...fromBinary(HeartbeatSchema, r.heartbeat as Uint8Array), addresses: r.addresses as string[] }
      : undefined,
    lastHeartbeatAt: ts(r.last_heartbeat_at as Date | null),
  };
}

/** Nodes, with the host picture of their home cluster's membership (the one the node was created in). */
const nodes: Loader<"node"> = async (sql, keys) => {
  const { rows } = await sql.query(
    `SELECT n.id, n.name, n.state, n.created_at, n.revoked_at, ${HOST_COLUMNS}
     FROM nodes n
     LEFT JOIN memberships m ON m.node_id = n.id AND m.cluster_id = n.home_cluster_id
     LEFT JOIN node_status s ON s.node_id = n.id AND s.cluster_id = n.home_cluster_id
     WHERE ($1::text[] IS NULL OR n.id = ANY($1))`,
    [keys],
  );
  const byNode = new Map<string, Membership[]>();
  for (const m of await loadMemberships(sql, null, keys)) {
    byNode.set(m.nodeId, [...(byNode.get(m.nodeId) ?? []), m]);
  }
  return rows.map((r) =>
    create(NodeSchema, {
      id: r.id,
      name: r.name,
      ...hostFields(r),
      memberships: byNode.get(r.id) ?? [],
      state: NODE_STATES[r.state],
      createdAt: ts(r.created_at),
      revokedAt: ts(r.revoked_at),
    }),
  );
};

/**
 * The host as one membership sees it (key `<node>/<cluster>`): a Node message holding only the id, what
 * the node reported through that membership, and the membership's id and cluster. Registry-internal:
 * cluster-admins and organization views of that cluster read it instead of the home cluster's picture.
 */
const membershipHosts: Loader<"membership_host"> = async (sql, keys) => {
  const [nodeIds, clusterIds] = splitKeys(keys, 2);
  const { rows } = await sql.query(
    `SELECT m.id AS membership_id, m.node_id, m.cluster_id, ${HOST_COLUMNS}
     FROM memberships m LEFT JOIN node_status s ON s.node_id = m.node_id AND s.cluster_id = m.cluster_id
     WHERE $1::text[] IS NULL OR (m.node_id, m.cluster_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
    [nodeIds, clusterIds],
  );
  return rows.map((r) =>
    create(NodeSchema, {
      id: r.node_id,
      ...hostFields(r),
      memberships: [{ id: r.membership_id, nodeId: r.node_id, clusterId: r.cluster_id }],
    }),
  );
};

const capabilities: Loader<"capability"> = async (sql, keys) => {
  const { rows } = await sql.query(
    `SELECT c.name, c.description, c.built_in,
            ARRAY(SELECT r.name FROM roles r WHERE c.name = ANY(r.required_capabilities) ORDER BY 1) AS roles
     FROM capabilities c WHERE ($1::text[] IS NULL OR c.name = ANY($1))`,
    [keys],
  );
  return rows.map((r) =>
    create(CapabilitySchema, {
      name: r.name,
      description: r.description,
      builtIn: r.built_in,
      requiredByRoles: r.roles,
    }),
  );
};

const roles: Loader<"role"> = async (sql, keys) => {
  const { rows } = await sql.query(
    `SELECT name, description, required_capabilities, built_in, created_at, created_by_kind, created_by_id
     FROM roles WHERE ($1::text[] IS NULL OR name = ANY($1))`,
    [keys],
  );
  return rows.map((r) =>
    create(RoleSchema, {
      name: r.name,
      description: r.description,
      requiredCapabilities: r.required_capabilities,
      builtIn: r.built_in,
      createdAt: ts(r.created_at),
      createdBy: principalRef(r.created_by_kind, r.created_by_id),
    }),
  );
};

const roleAssignments: Loader<"role_assignment"> = async (sql, keys) => {
  const { rows } = await sql.query(
    `SELECT id, node_id, cluster_id, role, organization_id, assigned_at, assigned_by_kind, assigned_by_id
     FROM role_assignments WHERE ($1::text[] IS NULL OR id = ANY($1))`,
    [keys],
  );
  return rows.map((r) =>
    create(RoleAssignmentSchema, {
      id: r.id,
      nodeId: r.node_id,
      clusterId: r.cluster_id,
      role: r.role,
      organizationId: r.organization_id ?? "",
      assignedAt: ts(r.assigned_at),
      assignedBy: principalRef(r.assigned_by_kind, r.assigned_by_id),
    }),
  );
};

const workloads: Loader<"workload"> = async (sql, keys) => {
  const { rows } = await sql.query(
    `SELECT spec, generation, created_at, updated_at, updated_by_kind, updated_by_id
     FROM workloads WHERE ($1::text[] IS NULL OR id = ANY($1))`,
    [keys],
  );
  return rows.map((r) =>
    create(WorkloadSchema, {
      spec: fromBinary(WorkloadSpecSchema, r.spec),
      generation: BigInt(r.generation),
      createdAt: ts(r.created_at),
      updatedAt: ts(r.updated_at),
      updatedBy: principalRef(r.updated_by_kind, r.updated_by_id),
    }),
  );
};

const workloadStatus: Loader<"workload_status"> = async (sql, keys) => {
  const [workloadIds, nodeIds] = splitKeys(keys, 2);
  const { rows } = await sql.query(
    `SELECT workload_id, cluster_id, node_id, generation, state, restarts, last_exit_code, message,
            state_changed_at, reported_at
     FROM workload_status
     WHERE $1::text[] IS NULL OR (workload_id, node_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
    [workloadIds, nodeIds],
  );
  return rows.map((r) =>
    create(WorkloadStatusSchema, {
      workloadId: r.workload_id,
      clusterId: r.cluster_id,
      nodeId: r.node_id,
      generation: BigInt(r.generation),
      state: r.state as WorkloadState,
      restarts: r.restarts,
      lastExitCode: r.last_exit_code,
      message: r.message,
      stateChangedAt: ts(r.state_changed_at),
      reportedAt: ts(r.reported_at),
    }),
  );
};

const egressPools: Loader<"egress_pool"> = async (sql, keys) => {
  const { rows } = await sql.query(
    `SELECT p.id, p.cluster_id, p.name, p.description, p.organization_ids, p.created_at, p.updated_at,
            COALESCE(json_agg(json_build_object('node_id', m.node_id, 'weight', m.weight, 'added_at', m.added_at)
                              ORDER BY m.node_id) FILTER (WHERE m.node_id IS NOT NULL), '[]') AS members
     FROM egress_pools p LEFT JOIN egress_pool_members m ON m.pool_id = p.id
     WHERE ($1::text[] IS NULL OR p.id = ANY($1))
     GROUP BY p.id`,
    [keys],
  );
  return rows.map((r) =>
    create(EgressPoolSchema, {
      id: r.id,
      clusterId: r.cluster_id,
      name: r.name,
      description: r.description,
      organizationIds: r.organization_ids,
      members: (r.members as { node_id: string; weight: number; added_at: string }[]).map((m) =>
        create(EgressPoolMemberSchema, {
          nodeId: m.node_id,
          weight: m.weight,
          addedAt: ts(new Date(m.added_at)),
        }),
      ),
      createdAt: ts(r.created_at),
      updatedAt: ts(r.updated_at),
    }),
  );
};

const probeStats: Loader<"probe_stats"> = async (sql, keys) => {
  const [clusterIds, fromIds, toIds] = splitKeys(keys, 3);
  const { rows } = await sql.query(
    `SELECT cluster_id, from_node_id, to_node_id, latency_us, loss_ratio, samples, updated_at,
            cardinality(ARRAY(SELECT f FROM unnest(failures) f WHERE f > now() - interval '10 minutes')) AS failures
     FROM probe_stats
     WHERE $1::text[] IS NULL
        OR (cluster_id, from_node_id, to_node_id) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))`,
    [clusterIds, fromIds, toIds],
  );
  return rows.map((r) =>
    create(ProbeStatsSchema, {
      clusterId: r.cluster_id,
      fromNodeId: r.from_node_id,
      toNodeId: r.to_node_id,
      latency: durationFromUs(r.latency_us),
      lossRatio: r.loss_ratio,
      samples: r.samples,
      recentFailures: r.failures,
      updatedAt: ts(r.updated_at),
    }),
  );
};

export const LOADERS: { [K in EntityKind]: Loader<K> } = {
  cluster: clusters,
  organization: organizations,
  node_group: nodeGroups,
  node: nodes,
  membership: memberships,
  membership_host: membershipHosts,
  capability: capabilities,
  role: roles,
  role_assignment: roleAssignments,
  workload: workloads,
  workload_status: workloadStatus,
  egress_pool: egressPools,
  probe_stats: probeStats,
};
