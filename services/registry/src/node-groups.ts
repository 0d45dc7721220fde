import {
  alreadyExists,
  callerOf,
  failedPrecondition,
  notFound,
  pageOf,
  requireCluster,
  sortByPosition,
} from "@fabric/platform";
import type { Handlers, Registry } from "./context.js";
import { LOADERS } from "./loaders.js";
import { mutate, written, type Mutation } from "./mutations.js";
import { groupIn, memberIn } from "./tenancy.js";
import { newId, required, text } from "./validation.js";

/**
 * Node groups: per-cluster folders that nest. A node's membership sits in at most one group of its
 * cluster. Groups grant nothing; they organize.
 */
export function nodeGroupHandlers(
  r: Registry,
): Handlers<"createNodeGroup" | "listNodeGroups" | "deleteNodeGroup" | "setNodeGroup"> {
  return {
    async createNodeGroup(req, ctx) {
      const id = newId("ng");
      const caller = callerOf(ctx);
      const m = {
        caller,
        action: "node_group.create",
        targetType: "node_group",
        targetId: id,
        clusterId: req.clusterId,
      };
      await mutate(r, m, async (w) => {
        required("cluster_id", req.clusterId);
        requireCluster(caller, req.clusterId);
        text("name", req.name, 128, { required: true });
        text("description", req.description, 1024, { multiline: true });
        const cluster = await w.tx.query("SELECT 1 FROM clusters WHERE id = $1", [req.clusterId]);
        if (cluster.rowCount === 0) throw notFound(`cluster "${req.clusterId}" does not exist`);
        if (req.parentGroupId) await groupIn(w.tx, req.parentGroupId, req.clusterId, "parent_group_id");
        const res = await w.tx.query(
          `INSERT INTO node_groups (id, cluster_id, name, parent_group_id, description) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT DO NOTHING`,
          [id, req.clusterId, req.name, req.parentGroupId || null, req.description],
        );
        if (res.rowCount === 0) {
          throw alreadyExists(
            `a node group named "${req.name}" already exists at that level; choose another name`,
          );
        }
        w.changes.touch("node_group", id);
        w.audit({ details: { name: req.name, parent_group_id: req.parentGroupId } });
      });
      return { nodeGroup: await written(r, "node_group", id) };
    },

    listNodeGroups(req, ctx) {
      required("cluster_id", req.clusterId);
      requireCluster(callerOf(ctx), req.clusterId);
      const key = (g: { name: string; id: string }) => [g.name, g.id];
      const groups = sortByPosition(
        r.model.values("node_group").filter((g) => g.clusterId === req.clusterId),
        key,
      );
      const page = pageOf(groups, key, req, `ListNodeGroups|${req.clusterId}`);
      return { nodeGroups: page.items, nextPageToken: page.nextPageToken };
    },

    async deleteNodeGroup(req, ctx) {
      const m: Mutation = {
        caller: callerOf(ctx),
        action: "node_group.delete",
        targetType: "node_group",
        targetId: req.nodeGroupId,
      };
      await mutate(r, m, async (w) => {
        required("node_group_id", req.nodeGroupId);
        const found = await w.tx.query("SELECT cluster_id FROM node_groups WHERE id = $1 FOR UPDATE", [
          req.nodeGroupId,
        ]);
        if (found.rowCount === 0) throw notFound(`node group "${req.nodeGroupId}" does not exist`);
        m.clusterId = found.rows[0].cluster_id as string;
        requireCluster(m.caller, m.clusterId);
        const children = await w.tx.query("SELECT 1 FROM node_groups WHERE parent_group_id = $1 LIMIT 1", [
          req.nodeGroupId,
        ]);
        if (children.rowCount)
          throw failedPrecondition("the node group has child groups; delete or move them first");
        const members = await w.tx.query("SELECT 1 FROM memberships WHERE node_group_id = $1 LIMIT 1", [
          req.nodeGroupId,
        ]);
        if (members.rowCount)
          throw failedPrecondition("the node group still holds nodes; move them out first (SetNodeGroup)");
        const [group] = await LOADERS.node_group(w.tx, [req.nodeGroupId]);
        await w.tx.query("DELETE FROM node_groups WHERE id = $1", [req.nodeGroupId]);
        w.changes.remove("node_group", group!);
        w.audit();
      });
      return {};
    },

    async setNodeGroup(req, ctx) {
      const m: Mutation = {
        caller: callerOf(ctx),
        action: "membership.set_group",
        targetType: "membership",
        clusterId: req.clusterId,
      };
      const membershipId = await mutate(r, m, async (w) => {
        required("node_id", req.nodeId);
        required("cluster_id", req.clusterId);
        const membership = await memberIn(w.tx, m.caller, req.nodeId, req.clusterId, "UPDATE");
        if (!membership)
          throw notFound(`node "${req.nodeId}" has no membership in cluster "${req.clusterId}"`);
        const id = membership.id;
        m.targetId = id;
        if (req.nodeGroupId) await groupIn(w.tx, req.nodeGroupId, req.clusterId, "node_group_id");
        if ((membership.node_group_id ?? "") === req.nodeGroupId) return id;
        await w.tx.query("UPDATE memberships SET node_group_id = $2 WHERE id = $1", [
          id,
          req.nodeGroupId || null,
        ]);
        w.changes.touch("membership", id);
        w.changes.touch("node", req.nodeId);
        w.audit({ details: { node_id: req.nodeId, node_group_id: req.nodeGroupId } });
        return id;
      });
      return { membership: await written(r, "membership", membershipId) };
    },
  };
}
