import {
  alreadyExists,
  callerOf,
  invalidArgument,
  isClusterAdmin,
  listCluster,
  notFound,
  pageOf,
  requireCluster,
  sortByPosition,
  viewOrganization,
} from "@fabric/platform";
import type { Handlers, Registry } from "./context.js";
import { mutate, written } from "./mutations.js";
import { readableOrganization, readableOrganizations } from "./tenancy.js";
import { labels, newId, slug, text } from "./validation.js";

/**
 * Clusters and organizations: created by platform-admins, read by the admins they concern (a
 * cluster-admin its cluster and the organizations it serves, an org-admin its organization).
 */
export function clusterHandlers(
  r: Registry,
): Handlers<
  | "createCluster"
  | "getCluster"
  | "listClusters"
  | "createOrganization"
  | "getOrganization"
  | "listOrganizations"
> {
  return {
    async createCluster(req, ctx) {
      const id = req.clusterId || newId("c");
      const m = {
        caller: callerOf(ctx),
        action: "cluster.create",
        targetType: "cluster",
        targetId: id,
        clusterId: id,
      };
      await mutate(r, m, async (w) => {
        slug("cluster_id", id);
        text("name", req.name, 128, { required: true });
        text("description", req.description, 1024, { multiline: true });
        text("region", req.region, 64);
        labels("labels", req.labels);
        const res = await w.tx.query(
          `INSERT INTO clusters (id, name, description, region, labels) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (id) DO NOTHING`,
          [id, req.name, req.description, req.region, JSON.stringify(req.labels)],
        );
        if (res.rowCount === 0)
          throw alreadyExists(`cluster "${id}" already exists; choose another cluster_id`);
        w.changes.touch("cluster", id);
        w.audit({ details: { name: req.name } });
      });
      return { cluster: await written(r, "cluster", id) };
    },

    getCluster(req, ctx) {
      requireCluster(callerOf(ctx), req.clusterId);
      const cluster = r.model.get("cluster", req.clusterId);
      if (!cluster) throw notFound(`cluster "${req.clusterId}" does not exist`);
      return { cluster };
    },

    listClusters(req, ctx) {
      const only = listCluster(callerOf(ctx), "");
      const clusters = sortByPosition(
        r.model.values("cluster").filter((c) => !only || c.id === only),
        (c) => [c.id],
      );
      const page = pageOf(clusters, (c) => [c.id], req, `ListClusters|${only}`);
      return { clusters: page.items, nextPageToken: page.nextPageToken };
    },

    async createOrganization(req, ctx) {
      const id = req.organizationId || newId("o");
      const m = {
        caller: callerOf(ctx),
        action: "organization.create",
        targetType: "organization",
        targetId: id,
        orgId: id,
      };
      await mutate(r, m, async (w) => {
        slug("organization_id", id);
        text("name", req.name, 128, { required: true });
        text("description", req.description, 1024, { multiline: true });
        labels("labels", req.labels);
        const res = await w.tx.query(
          `INSERT INTO organizations (id, name, description, labels) VALUES ($1, $2, $3, $4)
           ON CONFLICT (id) DO NOTHING`,
          [id, req.name, req.description, JSON.stringify(req.labels)],
        );
        if (res.rowCount === 0) {
          throw alreadyExists(`organization "${id}" already exists; choose another organization_id`);
        }
        w.changes.touch("organization", id);
        w.audit({ details: { name: req.name } });
      });
      return { organization: await written(r, "organization", id) };
    },

    getOrganization(req, ctx) {
      const caller = callerOf(ctx);
      // An org-admin may leave the id out: its own organization.
      const asked = isClusterAdmin(caller)
        ? req.organizationId
        : viewOrganization(caller, req.organizationId);
      if (!asked) throw invalidArgument("organization_id is required");
      return { organization: r.model.get("organization", readableOrganization(r, caller, asked))! };
    },

    listOrganizations(req, ctx) {
      const caller = callerOf(ctx);
      const only = listCluster(caller, "");
      const readable = readableOrganizations(r, caller);
      const orgs = sortByPosition(
        r.model.values("organization").filter((o) => !readable || readable.has(o.id)),
        (o) => [o.id],
      );
      const page = pageOf(orgs, (o) => [o.id], req, `ListOrganizations|${only}`);
      return { organizations: page.items, nextPageToken: page.nextPageToken };
    },
  };
}
