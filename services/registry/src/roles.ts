import {
  alreadyExists,
  callerOf,
  failedPrecondition,
  invalidArgument,
  listCluster,
  notFound,
  pageOf,
  requireCluster,
  sortByPosition,
} from "@fabric/platform";
import type { RoleAssignment } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import type { ChangeSet } from "./changes.js";
import type { Handlers, Registry } from "./context.js";
import { LOADERS } from "./loaders.js";
import { mutate, written, type Mutation } from "./mutations.js";
import type { Sql } from "./sql.js";
import { memberIn, requireBindableOrganizations } from "./tenancy.js";
import { newId, principalId, required, shown, slug, text } from "./validation.js";

const CAPABILITY = /^can_[a-z0-9_]{1,60}$/;

/**
 * The capability and role catalog, and role assignments. Capabilities are what a node reports it can
 * do; a role names the capabilities it requires; an assignment authorizes one node to perform one role
 * in one cluster (optionally for one organization) and is refused unless the node reports them all.
 */
export function roleHandlers(
  r: Registry,
): Handlers<
  "listCapabilities" | "createRole" | "listRoles" | "assignRole" | "removeRole" | "listRoleAssignments"
> {
  return {
    listCapabilities(req) {
      const key = (c: { name: string }) => [c.name];
      const page = pageOf(sortByPosition(r.model.values("capability"), key), key, req, "ListCapabilities");
      return { capabilities: page.items, nextPageToken: page.nextPageToken };
    },

    async createRole(req, ctx) {
      const m = { caller: callerOf(ctx), action: "role.create", targetType: "role", targetId: req.name };
      await mutate(r, m, async (w) => {
        slug("name", req.name);
        text("description", req.description, 1024, { multiline: true });
        const capabilities = [...new Set(req.requiredCapabilities)];
        if (capabilities.length > 32)
          throw invalidArgument("required_capabilities may list at most 32 capabilities");
        for (const c of capabilities) {
          if (!CAPABILITY.test(c)) {
            throw invalidArgument(
              `required_capabilities: ${shown(c)} must be lower snake case starting with "can_"`,
            );
          }
        }
        const res = await w.tx.query(
          `INSERT INTO roles (name, description, required_capabilities, created_by_kind, created_by_id)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING`,
          [req.name, req.description, capabilities, m.caller.kind, m.caller.id],
        );
        if (res.rowCount === 0) throw alreadyExists(`role "${req.name}" already exists; choose another name`);
        // Capabilities the catalog does not know yet join it; each listed one gains this role.
        await w.tx.query("INSERT INTO capabilities (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", [
          capabilities,
        ]);
        for (const c of capabilities) w.changes.touch("capability", c);
        w.changes.touch("role", req.name);
        w.audit({ details: { required_capabilities: capabilities.join(",") } });
      });
      return { role: await written(r, "role", req.name) };
    },

    listRoles(req) {
      const key = (x: { name: string }) => [x.name];
      const page = pageOf(sortByPosition(r.model.values("role"), key), key, req, "ListRoles");
      return { roles: page.items, nextPageToken: page.nextPageToken };
    },

    async assignRole(req, ctx) {
      const m: Mutation = {
        caller: callerOf(ctx),
        action: "role_assignment.create",
        targetType: "role_assignment",
        clusterId: req.clusterId,
      };
      const id = await mutate(r, m, async (w) => {
        principalId("node_id", req.nodeId);
        required("cluster_id", req.clusterId);
        required("role", req.role);
        const membership = await memberIn(w.tx, m.caller, req.nodeId, req.clusterId, "SHARE");
        await requireBindableOrganizations(
          w.tx,
          m.caller,
          req.clusterId,
          [req.organizationId].filter(Boolean),
        );
        if (req.organizationId) {
          const org = await w.tx.query("SELECT 1 FROM organizations WHERE id = $1", [req.organizationId]);
          if (org.rowCount === 0) throw notFound(`organization "${req.organizationId}" does not exist`);
        }
        if (!membership) {
          throw failedPrecondition(`node "${req.nodeId}" is not a member of cluster "${req.clusterId}"`);
        }
        if (membership.state !== "active") {
          throw failedPrecondition(
            `node "${req.nodeId}"'s membership in cluster "${req.clusterId}" is ${membership.state}; ${membership.state === "revoked" ? "the node is revoked" : "enable it first"}`,
          );
        }
        const role = await w.tx.query("SELECT required_capabilities FROM roles WHERE name = $1", [req.role]);
        if (role.rowCount === 0) throw notFound(`role "${req.role}" is not in the catalog (see ListRoles)`);
        // What the node reported when it joined this cluster: a join elsewhere does not count here.
        const reported = new Set(membership.capabilities);
        const missing = (role.rows[0].required_capabilities as string[]).filter((c) => !reported.has(c));
        if (missing.length > 0) {
          throw failedPrecondition(
            `node "${req.nodeId}" does not report ${missing.join(", ")}, which role "${req.role}" requires; a node can only hold roles it reports the capabilities for`,
          );
        }
        const assignment = await w.tx.query(
          `INSERT INTO role_assignments (id, node_id, cluster_id, role, organization_id, assigned_by_kind, assigned_by_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING id`,
          [
            newId("ra"),
            req.nodeId,
            req.clusterId,
            req.role,
            req.organizationId || null,
            m.caller.kind,
            m.caller.id,
          ],
        );
        if (assignment.rowCount === 0) {
          // The same assignment exists: returned unchanged, nothing to record.
          const existing = await w.tx.query(
            `SELECT id FROM role_assignments WHERE node_id = $1 AND cluster_id = $2 AND role = $3
             AND organization_id IS NOT DISTINCT FROM $4`,
            [req.nodeId, req.clusterId, req.role, req.organizationId || null],
          );
          return existing.rows[0].id as string;
        }
        const id = assignment.rows[0].id as string;
        m.targetId = id;
        touchHolder(w.changes, id, req.nodeId, await membershipId(w.tx, req.nodeId, req.clusterId));
        // The organization goes into details, not org_id: org-admins must not see which nodes serve them.
        w.audit({
          targetId: id,
          details: { node_id: req.nodeId, role: req.role, organization_id: req.organizationId },
        });
        return id;
      });
      return { roleAssignment: await written(r, "role_assignment", id) };
    },

    async removeRole(req, ctx) {
      const m: Mutation = {
        caller: callerOf(ctx),
        action: "role_assignment.remove",
        targetType: "role_assignment",
        targetId: req.roleAssignmentId,
      };
      const removed = await mutate(r, m, async (w) => {
        required("role_assignment_id", req.roleAssignmentId);
        const [assignment] = await LOADERS.role_assignment(w.tx, [req.roleAssignmentId]);
        if (!assignment) throw notFound(`role assignment "${req.roleAssignmentId}" does not exist`);
        m.clusterId = assignment.clusterId;
        requireCluster(m.caller, assignment.clusterId);
        await w.tx.query("SELECT 1 FROM role_assignments WHERE id = $1 FOR UPDATE", [assignment.id]);
        if (assignment.role === "egress-node") {
          const pools = await w.tx.query(
            `SELECT p.name FROM egress_pool_members pm JOIN egress_pools p ON p.id = pm.pool_id
             WHERE pm.node_id = $1 AND p.cluster_id = $2`,
            [assignment.nodeId, assignment.clusterId],
          );
          const stillOther = await w.tx.query(
            "SELECT 1 FROM role_assignments WHERE node_id = $1 AND cluster_id = $2 AND role = 'egress-node' AND id <> $3",
            [assignment.nodeId, assignment.clusterId, assignment.id],
          );
          if (pools.rowCount && !stillOther.rowCount) {
            throw failedPrecondition(
              `node "${assignment.nodeId}" backs egress pool(s) ${pools.rows.map((p) => `"${p.name}"`).join(", ")}; remove it from them first (RemoveEgressPoolMember)`,
            );
          }
        }
        await w.tx.query("DELETE FROM role_assignments WHERE id = $1", [assignment.id]);
        w.changes.remove("role_assignment", assignment);
        const membership = await membershipId(w.tx, assignment.nodeId, assignment.clusterId);
        touchHolder(w.changes, undefined, assignment.nodeId, membership);
        w.audit({
          details: {
            node_id: assignment.nodeId,
            role: assignment.role,
            organization_id: assignment.organizationId,
          },
        });
        return assignment;
      });
      return { roleAssignment: removed };
    },

    listRoleAssignments(req, ctx) {
      const cluster = listCluster(callerOf(ctx), req.clusterId);
      const key = (a: RoleAssignment) => [a.clusterId, a.nodeId, a.role, a.organizationId, a.id];
      const assignments = r.model
        .values("role_assignment")
        .filter(
          (a) =>
            (!cluster || a.clusterId === cluster) &&
            (!req.nodeId || a.nodeId === req.nodeId) &&
            (!req.role || a.role === req.role) &&
            (!req.organizationId || a.organizationId === req.organizationId),
        );
      const scope = `ListRoleAssignments|${cluster}|${req.nodeId}|${req.role}|${req.organizationId}`;
      const page = pageOf(sortByPosition(assignments, key), key, req, scope);
      return { roleAssignments: page.items, nextPageToken: page.nextPageToken };
    },
  };
}

async function membershipId(tx: Sql, nodeId: string, clusterId: string): Promise<string | undefined> {
  const { rows } = await tx.query("SELECT id FROM memberships WHERE node_id = $1 AND cluster_id = $2", [
    nodeId,
    clusterId,
  ]);
  return rows[0]?.id;
}

/** An assignment change also changes its node's membership roles and the node. */
function touchHolder(
  changes: ChangeSet,
  assignmentId: string | undefined,
  nodeId: string,
  membership: string | undefined,
): void {
  if (assignmentId) changes.touch("role_assignment", assignmentId);
  if (membership) changes.touch("membership", membership);
  changes.touch("node", nodeId);
}
