import {
  clusterScopeOf,
  describeCaller,
  failedPrecondition,
  isClusterAdmin,
  isOrgAdmin,
  isPlatformAdmin,
  notFound,
  permissionDenied,
  requireCluster,
  requireOrganization,
  type Principal,
} from "@fabric/platform";
import type { Registry } from "./context.js";
import type { Sql } from "./sql.js";

/**
 * The registry's half of the handler toolkit: the ids a request names are resolved here to the cluster
 * or organization they live in and checked against the caller's scope (platform/src/scope.ts) before any
 * effect. Clusters, node groups, memberships, role assignments, workloads and egress pools live in one
 * cluster; a node in every cluster it has a membership in; an organization is served by the clusters
 * that hold something of it (a workload, an egress pool offered to it, a role assignment scoped to it).
 *
 * A cluster-admin reaches an organization only through its own cluster: it may read the organizations
 * its cluster serves and bind more of its cluster to them, but binding an organization to a cluster for
 * the first time is a platform-admin's decision. Otherwise a cluster-admin could offer a stranger's
 * tenant an egress pool or entry nodes of its own choosing, and read every tenant's name.
 *
 * Out-of-scope ids are refused exactly as ids that do not exist, so no answer tells a caller what lies
 * outside its scope.
 */

/** The organizations `clusterId` serves, from the model (reads). */
function organizationsServedBy(r: Registry, clusterId: string): Set<string> {
  const orgs = new Set<string>();
  for (const w of r.model.values("workload")) {
    if (w.spec?.clusterId === clusterId && w.spec.organizationId) orgs.add(w.spec.organizationId);
  }
  for (const p of r.model.values("egress_pool")) {
    if (p.clusterId === clusterId) for (const o of p.organizationIds) orgs.add(o);
  }
  for (const a of r.model.values("role_assignment")) {
    if (a.clusterId === clusterId && a.organizationId) orgs.add(a.organizationId);
  }
  return orgs;
}

/**
 * The organizations the caller may read: undefined = every one (platform-admins); org-admins their own;
 * cluster-admins those their cluster serves (see the module comment).
 */
export function readableOrganizations(r: Registry, caller: Principal): Set<string> | undefined {
  if (isPlatformAdmin(caller)) return undefined;
  if (isOrgAdmin(caller)) return new Set(caller.organization ? [caller.organization] : []);
  if (isClusterAdmin(caller)) return organizationsServedBy(r, clusterScopeOf(caller)!);
  return new Set();
}

/** The organization for a read, or NotFound alike whether it is missing or out of the caller's reach. */
export function readableOrganization(r: Registry, caller: Principal, orgId: string): string {
  if (isOrgAdmin(caller)) requireOrganization(caller, orgId);
  const readable = readableOrganizations(r, caller);
  if (!r.model.get("organization", orgId) || (readable && !readable.has(orgId))) {
    const scope = isClusterAdmin(caller) ? ` or is not served by cluster "${clusterScopeOf(caller)}"` : "";
    throw notFound(`organization "${orgId}" does not exist${scope}`);
  }
  return orgId;
}

/**
 * Refuses a change that binds `clusterId` to organizations the caller may not bind it to: a cluster-admin
 * only to organizations the cluster already serves (checked in the change's transaction). Run after
 * requireCluster(caller, clusterId) and before the organizations' existence is checked, so a refusal
 * says nothing about whether they exist.
 */
export async function requireBindableOrganizations(
  tx: Sql,
  caller: Principal,
  clusterId: string,
  orgIds: readonly string[],
): Promise<void> {
  if (isPlatformAdmin(caller) || orgIds.length === 0) return;
  requireCluster(caller, clusterId);
  const { rows } = await tx.query<{ org: string }>(
    `SELECT org FROM unnest($1::text[]) AS org
     WHERE EXISTS (SELECT 1 FROM workloads WHERE organization_id = org AND cluster_id = $2)
        OR EXISTS (SELECT 1 FROM egress_pools WHERE org = ANY(organization_ids) AND cluster_id = $2)
        OR EXISTS (SELECT 1 FROM role_assignments WHERE organization_id = org AND cluster_id = $2)`,
    [[...new Set(orgIds)], clusterId],
  );
  const served = new Set(rows.map((row) => row.org));
  const outside = orgIds.filter((o) => !served.has(o));
  if (outside.length > 0) {
    throw permissionDenied(
      `${describeCaller(caller)} may only name organizations cluster "${clusterId}" already serves, not ${outside
        .map((o) => `"${o}"`)
        .join(", ")}; a platform-admin binds an organization to a cluster first`,
    );
  }
}

export interface MemberRow {
  id: string;
  state: string;
  /** What the node reported when it joined this cluster (never another cluster's). */
  capabilities: string[];
  node_group_id: string | null;
}

/**
 * A node's membership in a cluster the caller administers, locked for a change concerning the node
 * there; undefined when there is none. A node that does not exist and one that is a member only of
 * other clusters look the same.
 */
export async function memberIn(
  tx: Sql,
  caller: Principal,
  nodeId: string,
  clusterId: string,
  lock: "SHARE" | "UPDATE",
): Promise<MemberRow | undefined> {
  requireCluster(caller, clusterId);
  const { rows } = await tx.query<MemberRow>(
    `SELECT id, state, capabilities, node_group_id FROM memberships WHERE node_id = $1 AND cluster_id = $2
     FOR ${lock}`,
    [nodeId, clusterId],
  );
  return rows[0];
}

/**
 * Refuses unless `groupId` is a node group of `clusterId` (a change in that cluster names it). A group of
 * another cluster and a group that does not exist get the same answer.
 */
export async function groupIn(tx: Sql, groupId: string, clusterId: string, field: string): Promise<void> {
  const { rows } = await tx.query("SELECT 1 FROM node_groups WHERE id = $1 AND cluster_id = $2", [
    groupId,
    clusterId,
  ]);
  if (!rows[0])
    throw failedPrecondition(`${field}: "${groupId}" is not a node group of cluster "${clusterId}"`);
}
