import { alreadyExists, notFound, pageOf, sortByPosition } from "@fabric/platform";
import { callerOf, listCluster, requireCluster, viewOrganization } from "./access.js";
import type { Handlers, Registry } from "./context.js";
import { mutate, written } from "./mutations.js";
import { labels, newId, slug, text } from "./validation.js";

/** Clusters and organizations: created by platform-admins, read by the admins they concern. */
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
        text("description", req.description, 1024);
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
        text("description", req.description, 1024);
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
      const id = viewOrganization(callerOf(ctx), req.organizationId);
      const organization = id ? r.model.get("organization", id) : undefined;
      if (!organization) throw notFound(`organization "${id}" does not exist`);
      return { organization };
    },

    listOrganizations(req) {
      const orgs = sortByPosition(r.model.values("organization"), (o) => [o.id]);
      const page = pageOf(orgs, (o) => [o.id], req, "ListOrganizations");
      return { organizations: page.items, nextPageToken: page.nextPageToken };
    },
  };
}
