import type { HandlerContext } from "@connectrpc/connect";
import { permissionDenied, principalOf, unauthenticated, type Principal } from "@fabric/platform";

/**
 * Scoping beyond the policy table. The table says which kinds of caller may call an RPC; these say which
 * objects an admin may touch with it: a cluster-admin only the cluster in its certificate, an org-admin
 * only the organization in its certificate.
 */

export function callerOf(ctx: HandlerContext): Principal {
  const caller = principalOf(ctx.values);
  // Unreachable through the server (no registry RPC is anonymous); kept so handlers never guess.
  if (!caller) throw unauthenticated("this RPC needs a client certificate issued by this fabric's CA");
  return caller;
}

export const isPlatformAdmin = (p: Principal) => p.kind === "admin" && p.adminRole === "platform-admin";
const isClusterAdmin = (p: Principal) => p.kind === "admin" && p.adminRole === "cluster-admin";
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

/** Refuses unless the caller administers `clusterId`: platform-admins any, cluster-admins their own. */
export function requireCluster(caller: Principal, clusterId: string): void {
  if (isPlatformAdmin(caller)) return;
  if (isClusterAdmin(caller)) {
    const own = ownCluster(caller);
    if (own === clusterId) return;
    throw permissionDenied(`cluster-admin "${caller.id}" administers cluster "${own}", not "${clusterId}"`);
  }
  throw permissionDenied(`${describeCaller(caller)} may not administer cluster "${clusterId}"`);
}

/**
 * The cluster filter of a list call: platform-admins get what they asked for (empty = all clusters),
 * cluster-admins always their own cluster, and asking for another one is refused.
 */
export function listCluster(caller: Principal, requested: string): string {
  if (isPlatformAdmin(caller)) return requested;
  const own = ownCluster(caller);
  if (requested && requested !== own) {
    throw permissionDenied(`cluster-admin "${caller.id}" administers cluster "${own}", not "${requested}"`);
  }
  return own;
}

/** The organization an org view or org-scoped read shows: org-admins their own, platform-admins must name one. */
export function viewOrganization(caller: Principal, requested: string): string {
  if (isOrgAdmin(caller)) {
    if (!caller.organization) {
      throw permissionDenied(
        `org-admin "${caller.id}" has no organization in its certificate; use a certificate issued for your organization`,
      );
    }
    if (requested && requested !== caller.organization) {
      throw permissionDenied(
        `org-admin "${caller.id}" may only see organization "${caller.organization}", not "${requested}"`,
      );
    }
    return caller.organization;
  }
  return requested;
}
