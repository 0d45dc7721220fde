/** The four kinds of principal that hold a Fabric identity (DESIGN.md, Identity). */
export const PRINCIPAL_KINDS = ["node", "service", "user", "admin"] as const;
export type PrincipalKind = (typeof PRINCIPAL_KINDS)[number];

/** Admin roles, carried in an admin certificate's grant extension. */
export const ADMIN_ROLES = ["platform-admin", "cluster-admin", "org-admin"] as const;
export type AdminRole = (typeof ADMIN_ROLES)[number];

/** The four control-plane services; a service principal's id is one of these. */
export const SERVICE_NAMES = ["ca", "enrollment", "registry", "router"] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

export function isPrincipalKind(value: string): value is PrincipalKind {
  return (PRINCIPAL_KINDS as readonly string[]).includes(value);
}

export function isAdminRole(value: string): value is AdminRole {
  return (ADMIN_ROLES as readonly string[]).includes(value);
}
