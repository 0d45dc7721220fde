import type { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { ADMIN_ROLES, SERVICE_NAMES, type Policy } from "@fabric/platform";

/**
 * Who may call what (ca.proto). The table admits callers by kind; handlers then narrow: services other
 * than enrollment may Sign only their own identity, cluster-admins act only within their cluster.
 */
export const CA_POLICY: Policy<typeof CaService> = {
  sign: { services: ["enrollment", "registry", "router"] },
  revoke: { adminRoles: ["platform-admin", "cluster-admin"], services: ["enrollment", "registry"] },
  getTrustBundle: { kinds: ["node", "user"], services: [...SERVICE_NAMES], adminRoles: [...ADMIN_ROLES] },
  // enrollment: to find certificates issued for a Sign whose answer was lost, and revoke them. registry: to
  // read the grants of the admin who approved attaching a host to an existing node.
  listCertificates: { adminRoles: ["platform-admin", "cluster-admin"], services: ["enrollment", "registry"] },
  watchRevocations: { services: [...SERVICE_NAMES], adminRoles: ["platform-admin"] },
  // The audit log: each admin sees its own scope (the handler narrows); only platform-admins verify it.
  listAudit: { adminRoles: ["platform-admin", "cluster-admin", "org-admin"] },
  verifyAudit: { adminRoles: ["platform-admin"] },
};
