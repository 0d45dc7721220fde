import type { Policy, Rule } from "@fabric/platform";
import type { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";

/**
 * Who may call each enrollment RPC (default deny: every method is listed). Scoping of cluster-admins to
 * their cluster and org-admins to their organization is done by the handlers.
 */
const CLUSTER_ADMINS: Rule = { adminRoles: ["platform-admin", "cluster-admin"] };

export const policy: Policy<typeof EnrollmentService> = {
  createJoinToken: CLUSTER_ADMINS,
  listJoinTokens: CLUSTER_ADMINS,
  revokeJoinToken: CLUSTER_ADMINS,
  // The caller has no certificate yet: the join token is the credential.
  join: { anonymous: true },
  // The signature over Join's challenge is the credential.
  waitForApproval: { anonymous: true },
  listJoinRequests: CLUSTER_ADMINS,
  getJoinRequest: CLUSTER_ADMINS,
  approveJoinRequest: CLUSTER_ADMINS,
  rejectJoinRequest: CLUSTER_ADMINS,
  issueDeveloperPin: { adminRoles: ["platform-admin", "org-admin"] },
  // The PIN is the credential.
  bootstrapDeveloper: { anonymous: true },
  // Any enrolled node, developer or admin, for itself; services renew through the CA.
  renew: { kinds: ["node", "user"], adminRoles: ["platform-admin", "cluster-admin", "org-admin"] },
  // The audit log: each admin sees its own scope (the handler narrows); only platform-admins verify it.
  listAudit: { adminRoles: ["platform-admin", "cluster-admin", "org-admin"] },
  verifyAudit: { adminRoles: ["platform-admin"] },
};
