import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import {
  ChangeEventSchema,
  ProbeStatsSchema,
  type ChangeEvent,
  type ProbeStats,
} from "@fabric/proto/fabric/registry/v1/changes_pb.js";
import { EgressPoolSchema, type EgressPool } from "@fabric/proto/fabric/registry/v1/egress_pb.js";
import {
  CapabilitySchema,
  ClusterSchema,
  MembershipSchema,
  NodeGroupSchema,
  NodeSchema,
  OrganizationSchema,
  RoleAssignmentSchema,
  RoleSchema,
  type Capability,
  type Cluster,
  type Membership,
  type Node,
  type NodeGroup,
  type Organization,
  type Role,
  type RoleAssignment,
} from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import {
  WorkloadSchema,
  WorkloadStatusSchema,
  type Workload,
  type WorkloadStatus,
} from "@fabric/proto/fabric/registry/v1/workload_pb.js";

/**
 * Every kind of entity the registry keeps in its change feed and in-memory model, the message that
 * carries it, its key, and the clusters it concerns. The router sees the kinds in ROUTER_CASES; the
 * rest feed only the registry's own model (so reads keep working from memory).
 */
export interface EntityTypes {
  cluster: Cluster;
  organization: Organization;
  node_group: NodeGroup;
  node: Node;
  membership: Membership;
  /** A node as one membership sees it (loaders.ts); never sent to the router. */
  membership_host: Node;
  capability: Capability;
  role: Role;
  role_assignment: RoleAssignment;
  workload: Workload;
  workload_status: WorkloadStatus;
  egress_pool: EgressPool;
  probe_stats: ProbeStats;
}

export type EntityKind = keyof EntityTypes;
export type AnyEntity = EntityTypes[EntityKind];

const SCHEMAS: { [K in EntityKind]: GenMessage<EntityTypes[K]> } = {
  cluster: ClusterSchema,
  organization: OrganizationSchema,
  node_group: NodeGroupSchema,
  node: NodeSchema,
  membership: MembershipSchema,
  membership_host: NodeSchema,
  capability: CapabilitySchema,
  role: RoleSchema,
  role_assignment: RoleAssignmentSchema,
  workload: WorkloadSchema,
  workload_status: WorkloadStatusSchema,
  egress_pool: EgressPoolSchema,
  probe_stats: ProbeStatsSchema,
};

export const ENTITY_KINDS = Object.keys(SCHEMAS) as EntityKind[];

export function isEntityKind(value: string): value is EntityKind {
  return value in SCHEMAS;
}

export const workloadStatusKey = (workloadId: string, nodeId: string) => `${workloadId}/${nodeId}`;
export const membershipHostKey = (nodeId: string, clusterId: string) => `${nodeId}/${clusterId}`;
export const probeKey = (clusterId: string, from: string, to: string) => `${clusterId}/${from}/${to}`;

/** The key an entity is stored under in the model and the changes table. */
export function entityKey<K extends EntityKind>(kind: K, entity: EntityTypes[K]): string {
  const e = entity as AnyEntity;
  switch (kind) {
    case "capability":
    case "role":
      return (e as Capability | Role).name;
    case "workload":
      return (e as Workload).spec?.id ?? "";
    case "workload_status": {
      const s = e as WorkloadStatus;
      return workloadStatusKey(s.workloadId, s.nodeId);
    }
    case "membership_host": {
      const n = e as Node;
      return membershipHostKey(n.id, n.memberships[0]?.clusterId ?? "");
    }
    case "probe_stats": {
      const p = e as ProbeStats;
      return probeKey(p.clusterId, p.fromNodeId, p.toNodeId);
    }
    default:
      return (e as Cluster).id;
  }
}

/** Clusters an entity concerns (for WatchChanges cluster filters); empty = platform-wide. */
export function entityClusters<K extends EntityKind>(kind: K, entity: EntityTypes[K]): string[] {
  const e = entity as AnyEntity;
  switch (kind) {
    case "cluster":
      return [(e as Cluster).id];
    case "node":
    case "membership_host":
      return [...new Set((e as Node).memberships.map((m) => m.clusterId))];
    case "workload":
      return [(e as Workload).spec?.clusterId ?? ""].filter(Boolean);
    case "node_group":
    case "membership":
    case "role_assignment":
    case "workload_status":
    case "egress_pool":
    case "probe_stats":
      return [(e as Membership).clusterId];
    default:
      return [];
  }
}

/** A message carrying only an entity's key, for deletions whose last state is unknown. */
export function keyOnly<K extends EntityKind>(kind: K, key: string): EntityTypes[K] {
  const parts = key.split("/");
  const init: Record<EntityKind, object> = {
    cluster: { id: key },
    organization: { id: key },
    node_group: { id: key },
    node: { id: key },
    membership: { id: key },
    membership_host: { id: parts[0], memberships: [{ nodeId: parts[0], clusterId: parts[1] }] },
    capability: { name: key },
    role: { name: key },
    role_assignment: { id: key },
    workload: { spec: { id: key } },
    workload_status: { workloadId: parts[0], nodeId: parts[1] },
    egress_pool: { id: key },
    probe_stats: { clusterId: parts[0], fromNodeId: parts[1], toNodeId: parts[2] },
  };
  return create(SCHEMAS[kind] as GenMessage<AnyEntity>, init[kind] as never) as EntityTypes[K];
}

export function encodeEntity<K extends EntityKind>(kind: K, entity: EntityTypes[K]): Uint8Array {
  return toBinary(SCHEMAS[kind] as GenMessage<AnyEntity>, entity);
}

export function decodeEntity<K extends EntityKind>(kind: K, bytes: Uint8Array): EntityTypes[K] {
  return fromBinary(SCHEMAS[kind] as GenMessage<AnyEntity>, bytes) as EntityTypes[K];
}

/** The kinds the router receives over WatchChanges, and the ChangeEvent field carrying each. */
export const ROUTER_CASES = {
  node: "node",
  membership: "membership",
  role_assignment: "roleAssignment",
  workload: "workload",
  egress_pool: "egressPool",
  probe_stats: "probeStats",
} as const satisfies Partial<Record<EntityKind, ChangeEvent["entity"]["case"]>>;

export type RouterKind = keyof typeof ROUTER_CASES;

export function isRouterKind(kind: EntityKind): kind is RouterKind {
  return kind in ROUTER_CASES;
}

/** The WatchChanges event for one change of a router-visible entity. */
export function changeEvent(
  kind: RouterKind,
  version: bigint,
  deleted: boolean,
  entity: AnyEntity,
): ChangeEvent {
  return create(ChangeEventSchema, {
    version,
    deleted,
    entity: { case: ROUTER_CASES[kind], value: entity } as ChangeEvent["entity"],
  });
}
