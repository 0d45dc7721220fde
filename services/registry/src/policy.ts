import type { Policy, Rule } from "@fabric/platform";
import type { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";

/**
 * Who may call each registry RPC (the proto's "Callable by"). The table admits a kind of caller; the
 * handlers then narrow admins to their cluster or organization (platform scope.ts, tenancy.ts). Org-admins
 * reach only the organization views, their own organization and its audit: every other RPC refuses them.
 */
const PLATFORM: Rule = { adminRoles: ["platform-admin"] };
const CLUSTER: Rule = { adminRoles: ["platform-admin", "cluster-admin"] };
const ORG_VIEW: Rule = { adminRoles: ["platform-admin", "org-admin"] };

export const REGISTRY_POLICY: Policy<typeof RegistryService> = {
  createCluster: PLATFORM,
  getCluster: CLUSTER,
  listClusters: CLUSTER,
  createOrganization: PLATFORM,
  getOrganization: { adminRoles: ["platform-admin", "cluster-admin", "org-admin"] },
  listOrganizations: CLUSTER,
  createNodeGroup: CLUSTER,
  listNodeGroups: CLUSTER,
  deleteNodeGroup: CLUSTER,
  setNodeGroup: CLUSTER,
  registerNode: { services: ["enrollment"] },
  // enrollment: to check that an approval attaching a host to an existing node stays in the approver's scope.
  getNode: { adminRoles: ["platform-admin", "cluster-admin"], services: ["enrollment"] },
  listNodes: CLUSTER,
  revokeNode: PLATFORM,
  listMemberships: CLUSTER,
  disableMembership: CLUSTER,
  enableMembership: CLUSTER,
  listCapabilities: CLUSTER,
  createRole: PLATFORM,
  listRoles: CLUSTER,
  assignRole: CLUSTER,
  removeRole: CLUSTER,
  listRoleAssignments: CLUSTER,
  putWorkload: CLUSTER,
  getWorkload: CLUSTER,
  listWorkloads: CLUSTER,
  deleteWorkload: CLUSTER,
  listWorkloadStatus: CLUSTER,
  createEgressPool: CLUSTER,
  listEgressPools: CLUSTER,
  addEgressPoolMember: CLUSTER,
  removeEgressPoolMember: CLUSTER,
  listAudit: { adminRoles: ["platform-admin", "cluster-admin", "org-admin"] },
  verifyAudit: PLATFORM,
  // enrollment: to check that an org-admin's developer defaults to a cluster serving its organization.
  getOrgOverview: { adminRoles: ["platform-admin", "org-admin"], services: ["enrollment"] },
  listOrgEntryPoints: ORG_VIEW,
  listOrgEgressPoints: ORG_VIEW,
  listOrgWorkloads: ORG_VIEW,
  session: { kinds: ["node"] },
  watchChanges: { services: ["router"] },
};
