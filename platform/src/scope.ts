import type { HandlerContext } from "@connectrpc/connect";
import { permissionDenied, unauthenticated } from "./errors.js";
import { principalOf, type Principal } from "./principal.js";

/**
 * The handler toolkit's scope checks: the one place every service asks "may this caller touch this
 * object?". The authorization table says which kinds of caller may call an RPC; these say which
 * clusters and organizations an admin may reach with it — a platform-admin every one, a cluster-admin
 * only the cluster in its certificate, an org-admin only the organization in its certificate. Every id a
 * request names is resolved to the cluster or organization it lives in and checked here before any effect.
 */

/** The verified caller of a handler; anonymous RPCs use principalOf() instead. */
export function callerOf(ctx: Pick<HandlerContext, "values">): Principal {
  const caller = principalOf(ctx.values);
  // Unreachable through the server for non-anonymous RPCs; kept so handlers never guess.
  if (!caller) throw unauthenticated("this RPC needs a client certificate issued by this fabric's CA");
  return caller;
}

/** Who did something, as recorded on rows and in audit. */
export interface Actor {
  kind: string;
  id: string;
}

export function actorOf(principal: Principal): Actor {
  return { kind: principal.kind, id: principal.id };
}

export const isPlatformAdmin = (p: Principal) => p.kind === "admin" && p.adminRole === "platform-admin";
export const isClusterAdmin = (p: Principal) => p.kind === "admin" && p.adminRole === "cluster-admin";
export const isOrgAdmin = (p: Principal) => p.kind === "admin" && p.adminRole === "org-admin";

export function describeCaller(p: Principal): string {
  return p.kind === "admin" ? `${p.adminRole} "${p.id}"` : `${p.kind} "${p.id}"`;
}

function ownCluster(caller: Principal): string {
  if (!caller.cluster) {
    throw permissionDenied(
      `cluster-admin "${caller.id}" has no cluster in its certificate; use a certificate issued for the cluster you administer`,
    );
  }
  return caller.cluster;
}

function ownOrganization(caller: Principal): string {
  if (!caller.organization) {
    throw permissionDenied(
      `${describeCaller(caller)} has no organization in its certificate; use a certificate issued for your organization`,
    );
  }
  return caller.organization;
}

/**
 * The cluster an admin may act on: undefined for a platform-admin (any cluster), the certificate's
 * cluster for a cluster-admin; anyone else administers no cluster.
 */
export function clusterScopeOf(caller: Principal): string | undefined {
  if (isPlatformAdmin(caller)) return undefined;
  if (isClusterAdmin(caller)) return ownCluster(caller);
  throw permissionDenied(`${describeCaller(caller)} administers no cluster`);
}

/** Refuses unless the caller administers `clusterId`: platform-admins any, cluster-admins their own. */
export function requireCluster(caller: Principal, clusterId: string): void {
  if (isPlatformAdmin(caller)) return;
  if (isClusterAdmin(caller)) {
    const own = ownCluster(caller);
    if (own === clusterId) return;
    throw permissionDenied(
      `cluster-admin "${caller.id}" administers cluster "${own}", not "${clusterId}"; ask a platform-admin`,
    );
  }
  throw permissionDenied(`${describeCaller(caller)} may not administer cluster "${clusterId}"`);
}

/**
 * Refuses unless the caller administers every cluster in `clusterIds` (an object living in several
 * clusters, such as a node with several memberships, is only in a cluster-admin's scope when all of
 * them are its own). An empty list is in no cluster-admin's scope.
 */
export function requireClusters(caller: Principal, clusterIds: readonly string[], what: string): void {
  if (isPlatformAdmin(caller)) return;
  if (clusterIds.length === 0) {
    throw permissionDenied(
      `${describeCaller(caller)} may not reach ${what}: it belongs to no cluster of yours`,
    );
  }
  for (const clusterId of clusterIds) requireCluster(caller, clusterId);
}

/**
 * The cluster filter of a list call: platform-admins get what they asked for (empty = all clusters),
 * cluster-admins always their own cluster, and asking for another one is refused.
 */
export function listCluster(caller: Principal, requested: string): string {
  if (isPlatformAdmin(caller)) return requested;
  if (!isClusterAdmin(caller)) throw permissionDenied(`${describeCaller(caller)} administers no cluster`);
  const own = ownCluster(caller);
  if (requested && requested !== own) {
    throw permissionDenied(`cluster-admin "${caller.id}" administers cluster "${own}", not "${requested}"`);
  }
  return own;
}

/** Refuses unless the caller administers `orgId`: platform-admins any, org-admins their own. */
export function requireOrganization(caller: Principal, orgId: string): void {
  if (isPlatformAdmin(caller)) return;
  if (isOrgAdmin(caller)) {
    const own = ownOrganization(caller);
    if (own === orgId) return;
    throw permissionDenied(`org-admin "${caller.id}" administers organization "${own}", not "${orgId}"`);
  }
  throw permissionDenied(`${describeCaller(caller)} may not administer organization "${orgId}"`);
}

/** The organization an org-scoped read shows: org-admins their own, platform-admins what they name. */
export function viewOrganization(caller: Principal, requested: string): string {
  if (isPlatformAdmin(caller)) return requested;
  if (!isOrgAdmin(caller)) throw permissionDenied(`${describeCaller(caller)} administers no organization`);
  const own = ownOrganization(caller);
  if (requested && requested !== own) {
    throw permissionDenied(`org-admin "${caller.id}" may only see organization "${own}", not "${requested}"`);
  }
  return own;
}
