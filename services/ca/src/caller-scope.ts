import { SERVICE_NAMES, clusterScopeOf, listCluster, type Principal } from "@fabric/platform";
import type { SignRequest } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";

/**
 * The CA's tenant checks, in one place: what each verified caller may name in a request. The policy
 * table (policy.ts) has already admitted the caller's kind; these narrow it, on the platform's scope
 * rules (platform/src/scope.ts):
 *
 * - Sign: the enrollment service issues what it authorized, for anyone but a control-plane service;
 *   any other service only renews its own identity.
 * - Revoke and ListCertificates: the services the table admits (enrollment, registry) and platform-admins
 *   reach every certificate; a cluster-admin only certificates scoped to its own cluster.
 */

/** Why `who` may not have this Sign request signed, or undefined when it may. */
export function signRefusal(who: Principal, req: SignRequest): string | undefined {
  const isService = req.principalKind === PrincipalKind.SERVICE;
  const self = isService && req.principalId === who.id;
  if (who.id !== "enrollment" && !self) {
    return `the ${who.id} service may only renew its own identity (principal_kind SERVICE, principal_id "${who.id}")`;
  }
  if (isService && !self && (SERVICE_NAMES as readonly string[]).includes(req.principalId)) {
    return `only the ${req.principalId} service itself may obtain the ${req.principalId} service identity`;
  }
  return undefined;
}

/** The cluster a caller's revocations are confined to: "" (none) for services and platform-admins. */
export function revocationScope(who: Principal): string {
  return who.kind === "service" ? "" : (clusterScopeOf(who) ?? "");
}

/** The cluster filter of a caller's ListCertificates: a cluster-admin always its own. */
export function listingCluster(who: Principal, requested: string): string {
  return who.kind === "service" ? requested : listCluster(who, requested);
}
