import { equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  callerOf,
  failedPrecondition,
  listCluster,
  notFound,
  pageOf,
  requireCluster,
  sortByPosition,
} from "@fabric/platform";
import { Environment } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { WorkloadSpecSchema } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import type { Workload, WorkloadStatus } from "@fabric/proto/fabric/registry/v1/workload_pb.js";
import type { Handlers, Registry } from "./context.js";
import { LOADERS } from "./loaders.js";
import { mutate, written, type Mutation } from "./mutations.js";
import type { Sql } from "./sql.js";
import { requireBindableOrganizations } from "./tenancy.js";
import { required } from "./validation.js";
import { validateWorkloadSpec } from "./workload-rules.js";

/** Workloads: desired state written by admins (under the guard rules), status reported by nodes. */
export function workloadHandlers(
  r: Registry,
): Handlers<"putWorkload" | "getWorkload" | "listWorkloads" | "deleteWorkload" | "listWorkloadStatus"> {
  /** The workload if the caller may see it; admins of other clusters get NotFound, as if it did not exist. */
  function visible(callerCluster: string, id: string): Workload {
    const workload = r.model.get("workload", id);
    if (!workload || (callerCluster && workload.spec?.clusterId !== callerCluster)) {
      throw notFound(
        `workload "${id}" does not exist${callerCluster ? ` in cluster "${callerCluster}"` : ""}`,
      );
    }
    return workload;
  }

  return {
    async putWorkload(req, ctx) {
      const spec = req.spec;
      const m: Mutation = {
        caller: callerOf(ctx),
        action: "workload.put",
        targetType: "workload",
        targetId: spec?.id ?? "",
        clusterId: spec?.clusterId ?? "",
        orgId: spec?.organizationId ?? "",
      };
      const created = await mutate(r, m, async (w) => {
        const s = validateWorkloadSpec(spec);
        requireCluster(m.caller, s.clusterId);
        const existing = await w.tx.query(
          "SELECT cluster_id, spec, generation FROM workloads WHERE id = $1 FOR UPDATE",
          [s.id],
        );
        const before = existing.rows[0];
        if (before && before.cluster_id !== s.clusterId) {
          requireCluster(m.caller, before.cluster_id);
          throw failedPrecondition(
            `workload "${s.id}" belongs to cluster "${before.cluster_id}"; a workload cannot move to another cluster (delete it and create a new one)`,
          );
        }
        await requireBindableOrganizations(w.tx, m.caller, s.clusterId, [s.organizationId].filter(Boolean));
        await references(w.tx, s.clusterId, s.role, s.organizationId, s.nodeIds);
        if (before && equals(WorkloadSpecSchema, fromBinary(WorkloadSpecSchema, before.spec), s))
          return false;
        const bytes = Buffer.from(toBinary(WorkloadSpecSchema, s));
        const generation = before ? BigInt(before.generation) + 1n : 1n;
        await w.tx.query(
          `INSERT INTO workloads (id, cluster_id, role, organization_id, environment, spec, generation,
             updated_by_kind, updated_by_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (id) DO UPDATE SET role = $3, organization_id = $4, environment = $5, spec = $6,
             generation = $7, updated_at = now(), updated_by_kind = $8, updated_by_id = $9`,
          [
            s.id,
            s.clusterId,
            s.role,
            s.organizationId || null,
            s.environment,
            bytes,
            generation.toString(),
            m.caller.kind,
            m.caller.id,
          ],
        );
        w.changes.touch("workload", s.id);
        w.audit({
          details: {
            generation: generation.toString(),
            role: s.role,
            environment: Environment[s.environment] ?? String(s.environment),
          },
        });
        return !before;
      });
      return { workload: await written(r, "workload", spec!.id), created };
    },

    getWorkload(req, ctx) {
      return { workload: visible(listCluster(callerOf(ctx), ""), req.workloadId) };
    },

    listWorkloads(req, ctx) {
      const cluster = listCluster(callerOf(ctx), req.clusterId);
      const key = (w: Workload) => [w.spec?.id ?? ""];
      const workloads = r.model.values("workload").filter((w) => {
        const s = w.spec!;
        return (
          (!cluster || s.clusterId === cluster) &&
          (!req.role || s.role === req.role) &&
          (!req.organizationId || s.organizationId === req.organizationId) &&
          (!req.environment || s.environment === req.environment)
        );
      });
      const scope = `ListWorkloads|${cluster}|${req.role}|${req.organizationId}|${req.environment}`;
      const page = pageOf(sortByPosition(workloads, key), key, req, scope);
      return { workloads: page.items, nextPageToken: page.nextPageToken };
    },

    async deleteWorkload(req, ctx) {
      const m: Mutation = {
        caller: callerOf(ctx),
        action: "workload.delete",
        targetType: "workload",
        targetId: req.workloadId,
      };
      await mutate(r, m, async (w) => {
        required("workload_id", req.workloadId);
        const own = listCluster(m.caller, "");
        const [workload] = await LOADERS.workload(w.tx, [req.workloadId]);
        if (!workload || (own && workload.spec?.clusterId !== own)) {
          throw notFound(`workload "${req.workloadId}" does not exist`);
        }
        m.clusterId = workload.spec!.clusterId;
        m.orgId = workload.spec!.organizationId;
        await w.tx.query("SELECT 1 FROM workloads WHERE id = $1 FOR UPDATE", [req.workloadId]);
        const statuses = await LOADERS.workload_status(
          w.tx,
          (
            await w.tx.query("SELECT node_id FROM workload_status WHERE workload_id = $1", [req.workloadId])
          ).rows.map((row) => `${req.workloadId}/${row.node_id}`),
        );
        await w.tx.query("DELETE FROM workload_status WHERE workload_id = $1", [req.workloadId]);
        await w.tx.query("DELETE FROM workloads WHERE id = $1", [req.workloadId]);
        for (const status of statuses) w.changes.remove("workload_status", status);
        w.changes.remove("workload", workload);
        w.audit();
      });
      return {};
    },

    listWorkloadStatus(req, ctx) {
      const cluster = listCluster(callerOf(ctx), req.clusterId);
      const key = (s: WorkloadStatus) => [s.workloadId, s.nodeId];
      const statuses = r.model
        .values("workload_status")
        .filter(
          (s) =>
            (!cluster || s.clusterId === cluster) &&
            (!req.workloadId || s.workloadId === req.workloadId) &&
            (!req.nodeId || s.nodeId === req.nodeId) &&
            (!req.state || s.state === req.state),
        );
      const scope = `ListWorkloadStatus|${cluster}|${req.workloadId}|${req.nodeId}|${req.state}`;
      const page = pageOf(sortByPosition(statuses, key), key, req, scope);
      return { statuses: page.items, nextPageToken: page.nextPageToken };
    },
  };
}

/** The cluster, role and organization a spec names must exist; pinned nodes must hold the role there. */
async function references(
  tx: Sql,
  clusterId: string,
  role: string,
  organizationId: string,
  nodeIds: string[],
): Promise<void> {
  if ((await tx.query("SELECT 1 FROM clusters WHERE id = $1", [clusterId])).rowCount === 0) {
    throw notFound(`spec.cluster_id: cluster "${clusterId}" does not exist`);
  }
  if ((await tx.query("SELECT 1 FROM roles WHERE name = $1", [role])).rowCount === 0) {
    throw notFound(`spec.role: role "${role}" is not in the catalog (see ListRoles)`);
  }
  if (
    organizationId &&
    (await tx.query("SELECT 1 FROM organizations WHERE id = $1", [organizationId])).rowCount === 0
  ) {
    throw notFound(`spec.organization_id: organization "${organizationId}" does not exist`);
  }
  if (nodeIds.length === 0) return;
  const { rows } = await tx.query(
    `SELECT DISTINCT node_id FROM role_assignments WHERE cluster_id = $1 AND role = $2 AND node_id = ANY($3)
       AND (organization_id IS NULL OR organization_id = $4)`,
    [clusterId, role, nodeIds, organizationId || null],
  );
  const holding = new Set(rows.map((row) => row.node_id as string));
  const missing = nodeIds.filter((id) => !holding.has(id));
  if (missing.length > 0) {
    throw failedPrecondition(
      `spec.node_ids: ${missing.map((id) => `"${id}"`).join(", ")} do not hold role "${role}" in cluster "${clusterId}"${organizationId ? ` for organization "${organizationId}"` : ""}; assign the role first`,
    );
  }
}
