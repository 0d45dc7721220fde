import { create, toBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  callerOf,
  failedPrecondition,
  invalidArgument,
  isAdminRole,
  notFound,
  parseSpiffeId,
  permissionDenied,
  requireClusters,
  unavailable,
  type Principal,
  type Tx,
} from "@fabric/platform";
import { CertificateStatus, type CertificateInfo } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import {
  NodeFactsSchema,
  PrincipalKind,
  type NodeFacts,
  type Principal as PrincipalRef,
} from "@fabric/proto/fabric/common/v1/common_pb.js";
import type { Handlers, Registry } from "./context.js";
import { kindName } from "./convert.js";
import { membershipHostKey } from "./entities.js";
import { mutate, type Mutation } from "./mutations.js";
import { labels, newId, principalId, required, shown, slug, text } from "./validation.js";

const CAPABILITY = /^can_[a-z0-9_]{1,60}$/;
const SERIAL = /^[0-9a-f]{1,64}$/;

/**
 * RegisterNode: enrollment, having had the CA sign an approved join request, records the node (new, or
 * an existing one joining another cluster), its membership in the cluster and its granted roles. One
 * transaction keyed by the join request: a retry, even after a crash mid-call, finds the registration and
 * returns it, so exactly one node and one membership come out of a join request.
 *
 * What the join reported (facts, capabilities) and the certificate are stored on this cluster's
 * membership only: a join never changes what the node's memberships in other clusters hold. Attaching an
 * existing node is checked here as well as in enrollment: its approver must administer every cluster the
 * node is in, by the grants the CA has on record for the approver.
 */
export function registerNodeHandlers(r: Registry): Handlers<"registerNode"> {
  return {
    async registerNode(req, ctx) {
      const m: Mutation = {
        caller: callerOf(ctx),
        action: "node.register",
        targetType: "node",
        targetId: req.nodeId,
        clusterId: req.clusterId,
      };
      return mutate(r, m, async (w) => {
        principalId("node_id", req.nodeId);
        slug("cluster_id", req.clusterId);
        text("join_request_id", required("join_request_id", req.joinRequestId), 128);
        const capabilities = [...new Set(req.capabilities)];
        for (const c of capabilities) {
          if (!CAPABILITY.test(c))
            throw invalidArgument(`capabilities: ${shown(c)} must be lower snake case starting with "can_"`);
        }
        const roles = [...new Set(req.grantedRoles)];
        for (const role of roles) slug("granted_roles", role);
        const serial = req.certificateSerial.toLowerCase().replaceAll(":", "");
        if (serial && !SERIAL.test(serial)) throw invalidArgument("certificate_serial must be hex");
        text("node_name", req.nodeName, 253);
        if (req.approvedBy?.id) principalId("approved_by.id", req.approvedBy.id);
        const facts = checkedFacts(req.facts);

        // Serializes retries of this join request, and concurrent joins of the same node id.
        await w.tx.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))", [
          `join:${req.joinRequestId}`,
        ]);
        await w.tx.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))", [`node:${req.nodeId}`]);
        const prior = await w.tx.query(
          "SELECT node_id, cluster_id, membership_id, node_created FROM registrations WHERE join_request_id = $1",
          [req.joinRequestId],
        );
        if (prior.rows[0]) {
          const p = prior.rows[0];
          if (p.node_id !== req.nodeId || p.cluster_id !== req.clusterId) {
            throw failedPrecondition(
              `join request "${req.joinRequestId}" was already registered for node "${p.node_id}" in cluster "${p.cluster_id}"`,
            );
          }
          return {
            nodeId: p.node_id as string,
            membershipId: p.membership_id as string,
            created: p.node_created as boolean,
          };
        }
        if ((await w.tx.query("SELECT 1 FROM clusters WHERE id = $1", [req.clusterId])).rowCount === 0) {
          throw notFound(`cluster "${req.clusterId}" does not exist`);
        }
        const approvedBy = req.approvedBy ? `${kindName(req.approvedBy.kind)}/${req.approvedBy.id}` : "";
        const node = await w.tx.query("SELECT state FROM nodes WHERE id = $1 FOR UPDATE", [req.nodeId]);
        if (node.rows[0]?.state === "revoked") {
          throw failedPrecondition(
            `node "${req.nodeId}" was revoked and its id is banned; the host must enroll as a new node`,
          );
        }
        const created = node.rowCount === 0;
        const factsBytes = Buffer.from(toBinary(NodeFactsSchema, facts));
        if (created) {
          const name = await insertNode(
            w.tx,
            req.nodeId,
            req.nodeName || facts.hostname || req.nodeId,
            req.clusterId,
          );
          w.audit({
            details: { join_request_id: req.joinRequestId, approved_by: approvedBy, name, created: "true" },
          });
        } else {
          // The host already exists: the join adds to (or renews) this cluster's membership only, and
          // only an approver whose scope covers every cluster the node is in may do that.
          const clusters = await w.tx.query<{ cluster_id: string }>(
            "SELECT cluster_id FROM memberships WHERE node_id = $1 ORDER BY cluster_id",
            [req.nodeId],
          );
          await requireAttachingApprover(r, req.approvedBy, req.nodeId, [
            ...new Set([...clusters.rows.map((row) => row.cluster_id), req.clusterId]),
          ]);
          w.audit({
            details: { join_request_id: req.joinRequestId, approved_by: approvedBy, created: "false" },
          });
        }
        const notAfter = req.certificateNotAfter ? timestampDate(req.certificateNotAfter) : null;
        const existing = await w.tx.query(
          "SELECT id, state FROM memberships WHERE node_id = $1 AND cluster_id = $2 FOR UPDATE",
          [req.nodeId, req.clusterId],
        );
        let membershipId: string;
        if (existing.rows[0]) {
          if (existing.rows[0].state === "revoked") {
            throw failedPrecondition(
              `node "${req.nodeId}"'s membership in cluster "${req.clusterId}" is revoked`,
            );
          }
          membershipId = existing.rows[0].id;
          await w.tx.query(
            `UPDATE memberships SET certificate_serial = $2, certificate_not_after = $3, facts = $4, capabilities = $5
             WHERE id = $1`,
            [membershipId, serial, notAfter, factsBytes, capabilities],
          );
          w.audit({
            action: "membership.renew",
            targetType: "membership",
            targetId: membershipId,
            details: { node_id: req.nodeId, serial },
          });
        } else {
          membershipId = newId("m");
          await w.tx.query(
            `INSERT INTO memberships (id, node_id, cluster_id, state, certificate_serial, certificate_not_after, facts,
               capabilities)
             VALUES ($1, $2, $3, 'active', $4, $5, $6, $7)`,
            [membershipId, req.nodeId, req.clusterId, serial, notAfter, factsBytes, capabilities],
          );
          w.audit({
            action: "membership.create",
            targetType: "membership",
            targetId: membershipId,
            details: { node_id: req.nodeId, serial },
          });
        }
        for (const role of roles) {
          const id = await grantRole(w.tx, req.nodeId, req.clusterId, role, capabilities, m);
          if (id) {
            w.changes.touch("role_assignment", id);
            w.audit({
              action: "role_assignment.create",
              targetType: "role_assignment",
              targetId: id,
              details: { node_id: req.nodeId, role },
            });
          }
        }
        await w.tx.query(
          `INSERT INTO registrations (join_request_id, node_id, cluster_id, membership_id, node_created)
           VALUES ($1, $2, $3, $4, $5)`,
          [req.joinRequestId, req.nodeId, req.clusterId, membershipId, created],
        );
        w.changes.touch("node", req.nodeId);
        w.changes.touch("membership", membershipId);
        w.changes.touch("membership_host", membershipHostKey(req.nodeId, req.clusterId));
        return { nodeId: req.nodeId, membershipId, created };
      });
    },
  };
}

/**
 * Inserts the node under its requested name made valid, with a numeric suffix when taken; the cluster it
 * is created in is its home.
 */
async function insertNode(tx: Tx, id: string, wanted: string, homeClusterId: string): Promise<string> {
  let base = wanted
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "");
  if (!/^[a-z]/.test(base)) base = `n-${base}`;
  base = base.slice(0, 56).replace(/-+$/, "");
  for (let n = 1; ; n++) {
    const name = n === 1 ? base : `${base}-${n}`;
    const res = await tx.query(
      `INSERT INTO nodes (id, name, home_cluster_id) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING`,
      [id, name, homeClusterId],
    );
    if (res.rowCount === 1) return name;
  }
}

/** An unscoped assignment of a granted role, if the node reports what it requires; its id when new. */
async function grantRole(
  tx: Tx,
  nodeId: string,
  clusterId: string,
  role: string,
  capabilities: string[],
  m: Mutation,
): Promise<string | undefined> {
  const found = await tx.query("SELECT required_capabilities FROM roles WHERE name = $1", [role]);
  if (found.rowCount === 0) throw notFound(`granted_roles: role "${role}" is not in the catalog`);
  const missing = (found.rows[0].required_capabilities as string[]).filter((c) => !capabilities.includes(c));
  if (missing.length > 0) {
    throw failedPrecondition(
      `granted_roles: node "${nodeId}" does not report ${missing.join(", ")}, which role "${role}" requires`,
    );
  }
  const res = await tx.query(
    `INSERT INTO role_assignments (id, node_id, cluster_id, role, organization_id, assigned_by_kind, assigned_by_id)
     VALUES ($1, $2, $3, $4, NULL, $5, $6) ON CONFLICT DO NOTHING RETURNING id`,
    [newId("ra"), nodeId, clusterId, role, m.caller.kind, m.caller.id],
  );
  return res.rows[0]?.id;
}

function checkedFacts(facts: NodeFacts | undefined): NodeFacts {
  const f = facts ?? create(NodeFactsSchema);
  text("facts.hostname", f.hostname, 253);
  text("facts.os", f.os, 32);
  text("facts.os_version", f.osVersion, 128);
  text("facts.arch", f.arch, 32);
  text("facts.agent_version", f.agentVersion, 64);
  text("facts.region", f.region, 64);
  if (f.addresses.length > 32 || f.addresses.some((a) => a.length > 261)) {
    throw invalidArgument("facts.addresses may hold at most 32 host:port entries");
  }
  f.addresses.forEach((a, i) => text(`facts.addresses[${i}]`, a, 261));
  labels("facts.labels", f.labels);
  return f;
}

// The CA could not answer now: enrollment retries the registration later.
const TRANSIENT = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Canceled, Code.Unknown]);

/**
 * Refuses to attach existing node `nodeId` unless the approver is an admin holding an active certificate
 * whose scope covers every one of `clusters` (the node's and the joined one). The approver's grants come
 * from the CA's inventory, not from enrollment's word: a join approved by a cluster-admin of one cluster
 * cannot take over a node of another, even if enrollment failed to check.
 */
async function requireAttachingApprover(
  r: Registry,
  approvedBy: PrincipalRef | undefined,
  nodeId: string,
  clusters: string[],
): Promise<void> {
  const what = `existing node "${nodeId}" (clusters ${clusters.join(", ")})`;
  if (approvedBy?.kind !== PrincipalKind.ADMIN || !approvedBy.id) {
    throw permissionDenied(
      `only an admin's approval may attach ${what}; this join was approved by ${approvedBy?.id ? `${kindName(approvedBy.kind)} "${approvedBy.id}"` : "no admin"}`,
    );
  }
  let certificates: CertificateInfo[];
  try {
    const res = await r.ca.listCertificates({
      principalKind: PrincipalKind.ADMIN,
      principalId: approvedBy.id,
      status: CertificateStatus.ACTIVE,
      pageSize: 1000,
    });
    certificates = res.certificates;
  } catch (err) {
    const cause = ConnectError.from(err);
    if (TRANSIENT.has(cause.code)) {
      throw unavailable(`the CA could not confirm the approver's grants now (${cause.rawMessage}); retry`);
    }
    throw permissionDenied(
      `the CA did not confirm the grants of approver "${approvedBy.id}": ${cause.rawMessage}`,
    );
  }
  const covers = (p: Principal) => {
    try {
      requireClusters(p, clusters, what);
      return true;
    } catch {
      return false;
    }
  };
  if (!certificates.map(adminPrincipal).some((p) => p !== undefined && covers(p))) {
    throw permissionDenied(
      `admin "${approvedBy.id}" holds no certificate administering every cluster of ${what}; a platform-admin must approve attaching it`,
    );
  }
}

/** The admin principal an active admin certificate on the CA's record stands for. */
function adminPrincipal(c: CertificateInfo): Principal | undefined {
  const role = c.grants[0];
  if (c.principalKind !== PrincipalKind.ADMIN || !role || !isAdminRole(role)) return undefined;
  let trustDomain: string;
  try {
    trustDomain = parseSpiffeId(c.spiffeId).trustDomain;
  } catch {
    return undefined; // not a certificate this fabric issued to an admin
  }
  const principal: Principal = {
    kind: "admin",
    id: c.principalId,
    spiffeId: c.spiffeId,
    trustDomain,
    adminRole: role,
    grant: role,
    serialHex: c.serial,
    notBefore: c.notBefore ? timestampDate(c.notBefore) : new Date(0),
    notAfter: c.notAfter ? timestampDate(c.notAfter) : new Date(0),
    fingerprintSha256: c.fingerprintSha256,
  };
  if (c.clusterId) principal.cluster = c.clusterId;
  if (c.organizationId) principal.organization = c.organizationId;
  return principal;
}
