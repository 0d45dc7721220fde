import { createHmac } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  callerOf,
  invalidArgument,
  notFound,
  pageOf,
  sortByPosition,
  viewOrganization,
  type Principal,
} from "@fabric/platform";
import { WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import type { EgressPool } from "@fabric/proto/fabric/registry/v1/egress_pb.js";
import { MembershipState, NodeState, type Node } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import {
  OrgEgressPointSchema,
  OrgEntryPointSchema,
  OrgStatus,
  OrgWorkloadSchema,
  type OrgEgressPoint,
  type OrgEntryPoint,
  type OrgWorkload,
} from "@fabric/proto/fabric/registry/v1/org_view_pb.js";
import { NodeHealth } from "@fabric/proto/fabric/registry/v1/session_pb.js";
import type { Workload } from "@fabric/proto/fabric/registry/v1/workload_pb.js";
import type { Handlers, Registry } from "./context.js";
import { ts } from "./convert.js";
import { nodeView } from "./nodes.js";

/**
 * Organization views: what an organization's admins may know, computed from the model into the Org*
 * messages, which have no field for a node id, a core node, a link, a route or another organization.
 * An organization is served by the clusters where it has workloads, egress pools or org-scoped role
 * assignments; its entry points are the addresses of the entry nodes serving it there (under opaque,
 * per-organization ids), its egress points are the pools granted to it (never their members).
 */

const ENTRY_ROLE = "entry-node";

function organizationOf(r: Registry, caller: Principal, requested: string): string {
  // The enrollment service (the only one the table admits) names the organization of the admin it acts for.
  const id = caller.kind === "service" ? requested : viewOrganization(caller, requested);
  if (!id) throw invalidArgument("organization_id is required");
  if (!r.model.get("organization", id)) throw notFound(`organization "${id}" does not exist`);
  return id;
}

/** Safe status of one node in one cluster (as its membership there reports it): availability only. */
function nodeStatus(r: Registry, found: Node | undefined, clusterId: string): OrgStatus {
  const node = found && nodeView(r, found, clusterId);
  const membership = node?.memberships.find((m) => m.clusterId === clusterId);
  if (!node || node.state !== NodeState.ACTIVE || membership?.state !== MembershipState.ACTIVE)
    return OrgStatus.UNAVAILABLE;
  if (!node.lastHeartbeatAt) return OrgStatus.UNSPECIFIED;
  if (!node.online || node.health === NodeHealth.UNHEALTHY) return OrgStatus.UNAVAILABLE;
  return node.health === NodeHealth.DEGRADED ? OrgStatus.DEGRADED : OrgStatus.AVAILABLE;
}

/** Several members or instances: all fine, some fine, none fine (or nothing known yet). */
function aggregate(statuses: OrgStatus[]): OrgStatus {
  if (statuses.length === 0) return OrgStatus.UNAVAILABLE;
  if (statuses.every((s) => s === OrgStatus.UNSPECIFIED)) return OrgStatus.UNSPECIFIED;
  if (statuses.every((s) => s === OrgStatus.AVAILABLE)) return OrgStatus.AVAILABLE;
  return statuses.some((s) => s === OrgStatus.AVAILABLE || s === OrgStatus.DEGRADED)
    ? OrgStatus.DEGRADED
    : OrgStatus.UNAVAILABLE;
}

interface OrgView {
  clusters: string[];
  entryPoints: OrgEntryPoint[];
  egressPoints: OrgEgressPoint[];
  workloads: OrgWorkload[];
}

/** Nodes allowed to perform `role` in `clusterId` for `org` (unscoped or scoped to it), active there. */
function holders(r: Registry, clusterId: string, role: string, org: string): Node[] {
  const ids = new Set(
    r.model
      .values("role_assignment")
      .filter(
        (a) =>
          a.clusterId === clusterId && a.role === role && (!a.organizationId || a.organizationId === org),
      )
      .map((a) => a.nodeId),
  );
  return [...ids]
    .map((id) => r.model.get("node", id))
    .filter((n): n is Node => !!n && n.state === NodeState.ACTIVE)
    .filter((n) =>
      n.memberships.some((m) => m.clusterId === clusterId && m.state === MembershipState.ACTIVE),
    );
}

function computeView(r: Registry, org: string): OrgView {
  const workloads = r.model.values("workload").filter((w) => w.spec?.organizationId === org);
  const pools = r.model.values("egress_pool").filter((p) => p.organizationIds.includes(org));
  const scoped = r.model.values("role_assignment").filter((a) => a.organizationId === org);
  const clusters = [
    ...new Set([
      ...workloads.map((w) => w.spec!.clusterId),
      ...pools.map((p) => p.clusterId),
      ...scoped.map((a) => a.clusterId),
    ]),
  ].sort();

  const entryPoints: OrgEntryPoint[] = [];
  for (const clusterId of clusters) {
    const cluster = r.model.get("cluster", clusterId);
    for (const holder of holders(r, clusterId, ENTRY_ROLE, org)) {
      const node = nodeView(r, holder, clusterId);
      const reported = node.lastHeartbeat?.addresses ?? [];
      const addresses = reported.length > 0 ? reported : (node.facts?.addresses ?? []);
      for (const address of addresses) {
        entryPoints.push(
          create(OrgEntryPointSchema, {
            id: `ep-${createHmac("sha256", r.viewKey).update(`${org}\n${clusterId}\n${node.id}\n${address}`).digest("hex").slice(0, 24)}`,
            clusterId,
            address,
            region: node.facts?.region || cluster?.region || "",
            status: nodeStatus(r, holder, clusterId),
          }),
        );
      }
    }
  }

  const egressPoints = pools.map((p: EgressPool) =>
    create(OrgEgressPointSchema, {
      egressPoolId: p.id,
      clusterId: p.clusterId,
      name: p.name,
      description: p.description,
      status: aggregate(p.members.map((m) => nodeStatus(r, r.model.get("node", m.nodeId), p.clusterId))),
    }),
  );

  return { clusters, entryPoints, egressPoints, workloads: workloads.map((w) => orgWorkload(r, w)) };
}

/** A workload's safe status: how many instances should run and how many are ready. */
function orgWorkload(r: Registry, w: Workload): OrgWorkload {
  const spec = w.spec!;
  const pinned = new Set(spec.nodeIds);
  const eligible = holders(r, spec.clusterId, spec.role, spec.organizationId).filter(
    (n) => pinned.size === 0 || pinned.has(n.id),
  );
  const statuses = eligible
    .map((n) => r.model.get("workload_status", `${spec.id}/${n.id}`))
    .filter((s) => s !== undefined);
  const ready = statuses.filter(
    (s) =>
      s.generation === w.generation &&
      (s.state === WorkloadState.HEALTHY || (s.state === WorkloadState.RUNNING && !spec.healthCheck)),
  ).length;
  const desired = eligible.length;
  const status =
    desired === 0
      ? OrgStatus.UNAVAILABLE
      : ready === desired
        ? OrgStatus.AVAILABLE
        : ready > 0
          ? OrgStatus.DEGRADED
          : statuses.length === 0
            ? OrgStatus.UNSPECIFIED
            : OrgStatus.UNAVAILABLE;
  const times = [w.updatedAt, ...statuses.map((s) => s.reportedAt)]
    .filter((t) => t !== undefined)
    .map((t) => timestampDate(t).getTime());
  return create(OrgWorkloadSchema, {
    workloadId: spec.id,
    clusterId: spec.clusterId,
    role: spec.role,
    environment: spec.environment,
    status,
    instancesDesired: desired,
    instancesReady: ready,
    updatedAt: times.length > 0 ? ts(new Date(Math.max(...times))) : undefined,
  });
}

export function orgViewHandlers(
  r: Registry,
): Handlers<"getOrgOverview" | "listOrgEntryPoints" | "listOrgEgressPoints" | "listOrgWorkloads"> {
  return {
    getOrgOverview(req, ctx) {
      const org = organizationOf(r, callerOf(ctx), req.organizationId);
      const view = computeView(r, org);
      return {
        overview: {
          organizationId: org,
          name: r.model.get("organization", org)!.name,
          clusters: view.clusters.map((id) => ({
            clusterId: id,
            name: r.model.get("cluster", id)?.name ?? "",
          })),
          entryPointCount: view.entryPoints.length,
          egressPointCount: view.egressPoints.length,
          workloadCount: view.workloads.length,
          workloadsAvailable: view.workloads.filter((w) => w.status === OrgStatus.AVAILABLE).length,
          generatedAt: ts(new Date()),
        },
      };
    },

    listOrgEntryPoints(req, ctx) {
      const org = organizationOf(r, callerOf(ctx), req.organizationId);
      const key = (e: OrgEntryPoint) => [e.clusterId, e.address, e.id];
      const page = pageOf(
        sortByPosition(computeView(r, org).entryPoints, key),
        key,
        req,
        `ListOrgEntryPoints|${org}`,
      );
      return { entryPoints: page.items, nextPageToken: page.nextPageToken };
    },

    listOrgEgressPoints(req, ctx) {
      const org = organizationOf(r, callerOf(ctx), req.organizationId);
      const key = (e: OrgEgressPoint) => [e.name, e.egressPoolId];
      const page = pageOf(
        sortByPosition(computeView(r, org).egressPoints, key),
        key,
        req,
        `ListOrgEgressPoints|${org}`,
      );
      return { egressPoints: page.items, nextPageToken: page.nextPageToken };
    },

    listOrgWorkloads(req, ctx) {
      const org = organizationOf(r, callerOf(ctx), req.organizationId);
      const key = (w: OrgWorkload) => [w.workloadId];
      const page = pageOf(
        sortByPosition(computeView(r, org).workloads, key),
        key,
        req,
        `ListOrgWorkloads|${org}`,
      );
      return { workloads: page.items, nextPageToken: page.nextPageToken };
    },
  };
}
