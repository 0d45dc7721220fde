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
import type { EgressPool } from "@fabric/proto/fabric/registry/v1/egress_pb.js";
import type { Handlers, Registry } from "./context.js";
import { mutate, written, type Mutation } from "./mutations.js";
import type { Sql } from "./sql.js";
import { requireBindableOrganizations } from "./tenancy.js";
import { newId, principalId, required, text } from "./validation.js";

/**
 * Egress pools: logical exits organizations route through, backed by nodes that hold `egress-node` in
 * the pool's cluster. Organizations see the pool (organization views), never its members.
 */
export function egressPoolHandlers(
  r: Registry,
): Handlers<"createEgressPool" | "listEgressPools" | "addEgressPoolMember" | "removeEgressPoolMember"> {
  return {
    async createEgressPool(req, ctx) {
      const id = newId("ep");
      const m: Mutation = {
        caller: callerOf(ctx),
        action: "egress_pool.create",
        targetType: "egress_pool",
        targetId: id,
        clusterId: req.clusterId,
      };
      await mutate(r, m, async (w) => {
        required("cluster_id", req.clusterId);
        requireCluster(m.caller, req.clusterId);
        text("name", req.name, 128, { required: true });
        text("description", req.description, 1024, { multiline: true });
        const orgs = [...new Set(req.organizationIds)];
        await requireBindableOrganizations(w.tx, m.caller, req.clusterId, orgs);
        if ((await w.tx.query("SELECT 1 FROM clusters WHERE id = $1", [req.clusterId])).rowCount === 0) {
          throw notFound(`cluster "${req.clusterId}" does not exist`);
        }
        const known = await w.tx.query("SELECT id FROM organizations WHERE id = ANY($1)", [orgs]);
        const unknown = orgs.filter((o) => !known.rows.some((row) => row.id === o));
        if (unknown.length > 0)
          throw notFound(`organization_ids: ${unknown.map((o) => `"${o}"`).join(", ")} do not exist`);
        const res = await w.tx.query(
          `INSERT INTO egress_pools (id, cluster_id, name, description, organization_ids) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (cluster_id, name) DO NOTHING`,
          [id, req.clusterId, req.name, req.description, orgs],
        );
        if (res.rowCount === 0) {
          throw alreadyExists(`cluster "${req.clusterId}" already has an egress pool named "${req.name}"`);
        }
        w.changes.touch("egress_pool", id);
        w.audit({ details: { name: req.name, organization_ids: orgs.join(",") } });
      });
      return { egressPool: await written(r, "egress_pool", id) };
    },

    listEgressPools(req, ctx) {
      const cluster = listCluster(callerOf(ctx), req.clusterId);
      const key = (p: EgressPool) => [p.name, p.id];
      const pools = r.model
        .values("egress_pool")
        .filter(
          (p) =>
            (!cluster || p.clusterId === cluster) &&
            (!req.organizationId || p.organizationIds.includes(req.organizationId)),
        );
      const page = pageOf(
        sortByPosition(pools, key),
        key,
        req,
        `ListEgressPools|${cluster}|${req.organizationId}`,
      );
      return { egressPools: page.items, nextPageToken: page.nextPageToken };
    },

    async addEgressPoolMember(req, ctx) {
      const m: Mutation = {
        caller: callerOf(ctx),
        action: "egress_pool.add_member",
        targetType: "egress_pool",
        targetId: req.egressPoolId,
      };
      await mutate(r, m, async (w) => {
        required("egress_pool_id", req.egressPoolId);
        principalId("node_id", req.nodeId);
        const weight = req.weight === 0 ? 100 : req.weight;
        if (weight < 1 || weight > 1000) throw invalidArgument(`weight must be 1-1000 (got ${req.weight})`);
        const cluster = await lockPool(w.tx, req.egressPoolId, m);
        const holds = await w.tx.query(
          `SELECT 1 FROM role_assignments ra JOIN memberships ms ON ms.node_id = ra.node_id AND ms.cluster_id = ra.cluster_id
           WHERE ra.node_id = $1 AND ra.cluster_id = $2 AND ra.role = 'egress-node' AND ms.state = 'active'`,
          [req.nodeId, cluster],
        );
        if (holds.rowCount === 0) {
          throw failedPrecondition(
            `node "${req.nodeId}" does not hold the egress-node role in cluster "${cluster}" (with an active membership); assign it first`,
          );
        }
        const res = await w.tx.query(
          `INSERT INTO egress_pool_members (pool_id, node_id, weight) VALUES ($1, $2, $3)
           ON CONFLICT (pool_id, node_id) DO UPDATE SET weight = $3 WHERE egress_pool_members.weight <> $3`,
          [req.egressPoolId, req.nodeId, weight],
        );
        if (res.rowCount === 0) return; // already a member with this weight
        await w.tx.query("UPDATE egress_pools SET updated_at = now() WHERE id = $1", [req.egressPoolId]);
        w.changes.touch("egress_pool", req.egressPoolId);
        w.audit({ details: { node_id: req.nodeId, weight: String(weight) } });
      });
      return { egressPool: await written(r, "egress_pool", req.egressPoolId) };
    },

    async removeEgressPoolMember(req, ctx) {
      const m: Mutation = {
        caller: callerOf(ctx),
        action: "egress_pool.remove_member",
        targetType: "egress_pool",
        targetId: req.egressPoolId,
      };
      await mutate(r, m, async (w) => {
        required("egress_pool_id", req.egressPoolId);
        principalId("node_id", req.nodeId);
        await lockPool(w.tx, req.egressPoolId, m);
        const res = await w.tx.query("DELETE FROM egress_pool_members WHERE pool_id = $1 AND node_id = $2", [
          req.egressPoolId,
          req.nodeId,
        ]);
        if (res.rowCount === 0)
          throw notFound(`node "${req.nodeId}" is not a member of egress pool "${req.egressPoolId}"`);
        await w.tx.query("UPDATE egress_pools SET updated_at = now() WHERE id = $1", [req.egressPoolId]);
        w.changes.touch("egress_pool", req.egressPoolId);
        w.audit({ details: { node_id: req.nodeId } });
      });
      return { egressPool: await written(r, "egress_pool", req.egressPoolId) };
    },
  };
}

/** Locks a pool for change and returns its cluster, refusing admins of other clusters. */
async function lockPool(tx: Sql, id: string, m: Mutation): Promise<string> {
  const found = await tx.query("SELECT cluster_id FROM egress_pools WHERE id = $1 FOR UPDATE", [id]);
  if (found.rowCount === 0) throw notFound(`egress pool "${id}" does not exist`);
  m.clusterId = found.rows[0].cluster_id as string;
  requireCluster(m.caller, m.clusterId);
  return m.clusterId;
}
