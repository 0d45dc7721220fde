import { create } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import {
  FabricError,
  callerOf,
  failedPrecondition,
  invalidArgument,
  refusalAuditorFor,
  requestTimestamp,
  isValidPrincipalId,
  permissionDenied,
  unavailable,
  type Principal,
} from "@fabric/platform";
import { WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { MembershipState, NodeState } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import {
  SessionResponseSchema,
  type SessionRequest,
  type SessionResponse,
} from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { DirectiveKind, NodeHealth } from "@fabric/proto/fabric/registry/v1/session_pb.js";
import type { Workload } from "@fabric/proto/fabric/registry/v1/workload_pb.js";
import type { Handlers, Registry } from "./context.js";
import { mutate } from "./mutations.js";
import { AsyncQueue } from "./queue.js";
import type { Report } from "./report-writer.js";
import { directive, type LiveSession } from "./session-hub.js";
import { slug, text } from "./validation.js";

// Reports a session may have in flight before it stops reading (HTTP/2 flow control then slows the agent).
const MAX_IN_FLIGHT = 2_000;
const HOST_PORT = /^[^\s]{1,255}:\d{1,5}$/;
// Refused reports a session audits (one event per reason and target); past this, they are only counted.
const MAX_AUDITED_REFUSALS = 16;

const ack = (seq: bigint): SessionResponse =>
  create(SessionResponseSchema, { payload: { case: "ack", value: { ackedSeq: seq } } });

/**
 * A node's Session. The node and cluster are those of its certificate: a node can only report for
 * itself, and only in a cluster where its membership is active. Every report goes to the group-commit
 * writer; the acknowledgement carrying its sequence number is sent only after its batch committed.
 * Directives (RENEW_NOW, DRAIN, SHUTDOWN) arrive on the same stream.
 */
export function sessionHandlers(r: Registry): Handlers<"session"> {
  // Certificates are recorded one at a time: after a restart every agent reconnects at once, and a
  // transaction each would take the connections the report writer needs.
  let recording = Promise.resolve();
  return {
    async *session(requests, ctx) {
      const caller = callerOf(ctx);
      const clusterId = caller.cluster ?? "";
      const node = r.model.get("node", caller.id);
      if (!node)
        throw permissionDenied(`node "${caller.id}" is not registered; enroll before opening a session`);
      const membership = node.memberships.find((m) => m.clusterId === clusterId);
      if (node.state === NodeState.REVOKED || membership?.state === MembershipState.REVOKED) {
        yield {
          payload: {
            case: "directive",
            value: directive(
              DirectiveKind.SHUTDOWN,
              `node "${node.id}" was revoked; enroll again as a new node`,
            ),
          },
        };
        return;
      }
      if (!membership)
        throw permissionDenied(`node "${caller.id}" is not a member of cluster "${clusterId}"`);
      if (membership.state !== MembershipState.ACTIVE) {
        throw failedPrecondition(
          `node "${caller.id}"'s membership in cluster "${clusterId}" is disabled (${membership.disabledReason}); an admin must enable it`,
        );
      }

      const out = new AsyncQueue<SessionResponse>();
      const live: LiveSession = {
        nodeId: caller.id,
        clusterId,
        send: (d) => out.push(create(SessionResponseSchema, { payload: { case: "directive", value: d } })),
        end: (error) => (error ? out.fail(error) : out.end()),
      };
      r.sessions.add(live);
      if (renewalOverdue(caller)) {
        live.send(
          directive(
            DirectiveKind.RENEW_NOW,
            "the certificate is past two thirds of its lifetime and was not renewed",
          ),
        );
      }
      // Recorded with the first report the session accepts: a session refused at once changes nothing.
      const certificateCurrent = serialOf(membership.certificateSerial) === serialOf(caller.serialHex);
      const onAccepted = certificateCurrent
        ? undefined
        : () => void (recording = recording.then(() => recordCertificate(r, caller, membership.id)));
      const reading = readReports(r, caller, clusterId, requests, out, ctx, onAccepted);
      try {
        yield* out;
      } finally {
        reading.stop();
        r.sessions.remove(live);
      }
    },
  };
}

/**
 * Reads the node's reports in order, hands each to the writer, and acknowledges the highest sequence
 * number whose batch committed (once per batch, not per report). Ends the session on a malformed report,
 * one about another cluster, or when the database cannot take reports (the agent resends what was not
 * acked). A report about a workload not placed on the node, or a peer that is no member of the cluster,
 * is acknowledged but not recorded (see checkReport); the first of each kind per target is audited.
 */
function readReports(
  r: Registry,
  caller: Principal,
  clusterId: string,
  requests: AsyncIterable<SessionRequest>,
  out: AsyncQueue<SessionResponse>,
  ctx: HandlerContext,
  onFirstAccepted: (() => void) | undefined,
): { stop(): void } {
  let stopped = false;
  let inFlight = 0;
  let durable = 0n;
  let acked = 0n;
  let ackScheduled = false;
  let drained: (() => void) | undefined;
  const sendAck = () => {
    ackScheduled = false;
    if (durable > acked) {
      acked = durable;
      out.push(ack(durable));
    }
  };
  const settled = () => {
    inFlight -= 1;
    if (inFlight <= MAX_IN_FLIGHT / 2 || inFlight === 0) drained?.();
  };
  // Through the service's one refusal auditor: a node's refused reports never take the pool reports need.
  const audit = (action: string, targetType: string, targetId: string, details: Record<string, string>) =>
    refusalAuditorFor(r.pool, r.logger).record({
      actorId: caller.id,
      actorKind: caller.kind,
      action,
      targetType,
      targetId,
      clusterId,
      details,
    });
  const audited = new Set<string>();
  const auditRefusal = (report: Report) => {
    const p = report.payload;
    // Only status and probe reports are ever refused this way.
    const [kind, targetType, target] =
      p.case === "probe"
        ? ["probe", "node", p.value.peerNodeId]
        : ["workload_status", "workload", p.case === "workloadStatus" ? p.value.workloadId : ""];
    const key = `${report.refused}/${target}`;
    if (audited.has(key) || audited.size >= MAX_AUDITED_REFUSALS) return;
    audited.add(key);
    void audit(`session.${kind}`, targetType, target, { reason: report.refused!, seq: String(report.seq) });
  };
  void (async () => {
    let expected = 1n;
    try {
      for await (const req of requests) {
        if (stopped || out.closed) return;
        if (req.seq !== expected) {
          throw invalidArgument(
            `seq must start at 1 and grow by one per message: expected ${expected}, got ${req.seq}`,
          );
        }
        expected += 1n;
        const report = checkReport(r, caller, clusterId, req);
        if (report.refused === undefined) {
          onFirstAccepted?.();
          onFirstAccepted = undefined;
        } else auditRefusal(report);
        inFlight += 1;
        r.reports.submit(report, (err) => {
          settled();
          if (err !== undefined) {
            out.fail(
              unavailable(
                "the registry cannot record reports now (its database is unavailable); reconnect with backoff and resend every report not acknowledged",
              ),
            );
            return;
          }
          // Batches commit in order, so this report's sequence number is now the durable prefix.
          if (report.seq > durable) durable = report.seq;
          if (!ackScheduled) {
            ackScheduled = true;
            setImmediate(sendAck);
          }
        });
        if (inFlight >= MAX_IN_FLIGHT) await new Promise<void>((resolve) => (drained = resolve));
      }
      // The agent closed its side: acknowledge what is still being written, then end.
      while (inFlight > 0 && !out.closed) await new Promise<void>((resolve) => (drained = resolve));
      sendAck();
      out.end();
    } catch (err) {
      if (stopped || ctx.signal.aborted) return;
      // A report reaching into another cluster ends the session; that refusal is audited too.
      if (err instanceof FabricError && err.kind === "permission-denied") {
        void audit("session.report", "node", caller.id, { reason: err.message });
      }
      out.fail(
        err instanceof FabricError
          ? err
          : invalidArgument(`the session stream failed: ${(err as Error).message}`),
      );
    }
  })();
  return {
    stop() {
      stopped = true;
      drained?.();
    },
  };
}

/**
 * Validates one report and turns it into a Report for the writer. A node reports only within its
 * placement in the cluster of its certificate: a report about another cluster's workload ends the
 * session (PermissionDenied: nothing legitimate sends one, workloads never change cluster), while the
 * status of a workload not (or no longer) placed on the node, or a probe of a peer that is not (or no
 * longer) a member of the cluster, is marked refused: acknowledged and counted, never recorded. Those two
 * race with placement and membership changes, and ending the session for them would have the agent
 * resend the same report forever; acknowledging them also answers exactly as for an unknown workload, so
 * the node learns nothing about workloads outside its placement.
 */
function checkReport(r: Registry, caller: Principal, clusterId: string, req: SessionRequest): Report {
  const at = `seq ${req.seq}`;
  const p = req.payload;
  let refused: string | undefined;
  switch (p.case) {
    case "heartbeat": {
      const h = p.value;
      for (const [name, v] of [
        ["cpu_ratio", h.cpuRatio],
        ["memory_ratio", h.memoryRatio],
      ] as const) {
        if (!(v >= 0 && v <= 1)) throw invalidArgument(`${at}: heartbeat.${name} must be between 0 and 1`);
      }
      if (!(h.health in NodeHealth))
        throw invalidArgument(`${at}: heartbeat.health is not a known NodeHealth`);
      text(`${at}: heartbeat.health_message`, h.healthMessage, 512);
      text(`${at}: heartbeat.agent_version`, h.agentVersion, 64);
      if (h.addresses.length > 32 || h.addresses.some((a) => !HOST_PORT.test(a))) {
        throw invalidArgument(`${at}: heartbeat.addresses must be at most 32 host:port entries`);
      }
      h.addresses.forEach((a, i) => text(`${at}: heartbeat.addresses[${i}]`, a, 261));
      break;
    }
    case "workloadStatus": {
      const s = p.value;
      slug(`${at}: workload_status.workload_id`, s.workloadId);
      const workload = r.model.get("workload", s.workloadId);
      if (workload && workload.spec?.clusterId !== clusterId) {
        throw permissionDenied(
          `${at}: workload "${s.workloadId}" is not in cluster "${clusterId}"; a node reports only for its own cluster`,
        );
      }
      if (!(s.state in WorkloadState))
        throw invalidArgument(`${at}: workload_status.state is not a known WorkloadState`);
      text(`${at}: workload_status.message`, s.message, 1024);
      if (s.stateChangedAt) requestTimestamp(s.stateChangedAt, `${at}: workload_status.state_changed_at`);
      if (!workload || !placedOn(r, workload, caller.id, clusterId)) refused = "workload_not_placed";
      break;
    }
    case "probe": {
      const probe = p.value;
      if (!isValidPrincipalId(probe.peerNodeId))
        throw invalidArgument(`${at}: probe.peer_node_id is not a node id`);
      if (probe.peerNodeId === caller.id) throw invalidArgument(`${at}: a node does not probe itself`);
      if (!(probe.lossRatio >= 0 && probe.lossRatio <= 1))
        throw invalidArgument(`${at}: probe.loss_ratio must be between 0 and 1`);
      if (
        probe.latency &&
        (probe.latency.seconds < 0n || probe.latency.seconds > 60n || probe.latency.nanos < 0)
      ) {
        throw invalidArgument(`${at}: probe.latency must be between 0 and 60 s`);
      }
      const peer = r.model.get("node", probe.peerNodeId);
      if (!peer?.memberships.some((m) => m.clusterId === clusterId)) refused = "peer_not_member";
      break;
    }
    default:
      throw invalidArgument(`${at}: set one of heartbeat, workload_status or probe`);
  }
  const report: Report = { nodeId: caller.id, clusterId, seq: req.seq, receivedAt: new Date(), payload: p };
  if (refused) report.refused = refused;
  return report;
}

/**
 * Whether the workload runs on the node in the cluster: the node holds its role there for its
 * organization (an unscoped assignment serves every organization; a platform workload accepts any), and
 * the workload pins no nodes or pins this one. The router places workloads by the same rule.
 */
function placedOn(r: Registry, workload: Workload, nodeId: string, clusterId: string): boolean {
  const spec = workload.spec;
  if (!spec || spec.clusterId !== clusterId) return false;
  if (spec.nodeIds.length > 0 && !spec.nodeIds.includes(nodeId)) return false;
  return r.model
    .assignmentsOf(clusterId, nodeId)
    .some(
      (a) =>
        a.role === spec.role &&
        (!spec.organizationId || !a.organizationId || a.organizationId === spec.organizationId),
    );
}

const serialOf = (hex: string) => hex.toLowerCase().replace(/^0+/, "");

/** Past two thirds of its lifetime plus 5% slack, a certificate should have been renewed already. */
function renewalOverdue(caller: Principal, now = Date.now()): boolean {
  const start = caller.notBefore.getTime();
  const lifetime = caller.notAfter.getTime() - start;
  return now > start + lifetime * (2 / 3 + 0.05);
}

/** The node renewed since its membership was recorded: keep the membership's certificate current. */
async function recordCertificate(r: Registry, caller: Principal, membershipId: string): Promise<void> {
  const m = {
    caller,
    action: "membership.certificate",
    targetType: "membership",
    targetId: membershipId,
    clusterId: caller.cluster ?? "",
  };
  await mutate(r, m, async (w) => {
    const res = await w.tx.query(
      `UPDATE memberships SET certificate_serial = $2, certificate_not_after = $3
       WHERE id = $1 AND certificate_serial <> $2 AND state = 'active'`,
      [membershipId, serialOf(caller.serialHex), caller.notAfter],
    );
    if (res.rowCount === 0) return;
    w.changes.touch("membership", membershipId);
    w.changes.touch("node", caller.id);
    w.audit({ details: { serial: serialOf(caller.serialHex) } });
  }).catch((err: unknown) =>
    r.logger.debug({ err: (err as Error).message }, "membership certificate not recorded"),
  );
}
