import { create } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import {
  FabricError,
  failedPrecondition,
  invalidArgument,
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
import { callerOf } from "./access.js";
import type { Handlers, Registry } from "./context.js";
import { mutate } from "./mutations.js";
import { AsyncQueue } from "./queue.js";
import type { Report } from "./report-writer.js";
import { directive, type LiveSession } from "./session-hub.js";

// Reports a session may have in flight before it stops reading (HTTP/2 flow control then slows the agent).
const MAX_IN_FLIGHT = 2_000;
const HOST_PORT = /^[^\s]{1,255}:\d{1,5}$/;

const ack = (seq: bigint): SessionResponse =>
  create(SessionResponseSchema, { payload: { case: "ack", value: { ackedSeq: seq } } });

/**
 * A node's Session. The node and cluster are those of its certificate: a node can only report for
 * itself, and only in a cluster where its membership is active. Every report goes to the group-commit
 * writer; the acknowledgement carrying its sequence number is sent only after its batch committed.
 * Directives (RENEW_NOW, DRAIN, SHUTDOWN) arrive on the same stream.
 */
export function sessionHandlers(r: Registry): Handlers<"session"> {
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
      if (serialOf(membership.certificateSerial) !== serialOf(caller.serialHex)) {
        void recordCertificate(r, caller, membership.id);
      }
      if (renewalOverdue(caller)) {
        live.send(
          directive(
            DirectiveKind.RENEW_NOW,
            "the certificate is past two thirds of its lifetime and was not renewed",
          ),
        );
      }
      const reading = readReports(r, caller, clusterId, requests, out, ctx);
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
 * number whose batch committed (once per batch, not per report). Ends the session on a malformed or
 * out-of-scope report, or when the database cannot take reports (the agent resends what was not acked).
 */
function readReports(
  r: Registry,
  caller: Principal,
  clusterId: string,
  requests: AsyncIterable<SessionRequest>,
  out: AsyncQueue<SessionResponse>,
  ctx: HandlerContext,
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

/** Validates one report and turns it into a Report for the writer; refuses reports outside the node's scope. */
function checkReport(r: Registry, caller: Principal, clusterId: string, req: SessionRequest): Report {
  const at = `seq ${req.seq}`;
  const p = req.payload;
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
      if (h.healthMessage.length > 512)
        throw invalidArgument(`${at}: heartbeat.health_message must be at most 512 characters`);
      if (h.agentVersion.length > 64)
        throw invalidArgument(`${at}: heartbeat.agent_version must be at most 64 characters`);
      if (h.addresses.length > 32 || h.addresses.some((a) => !HOST_PORT.test(a))) {
        throw invalidArgument(`${at}: heartbeat.addresses must be at most 32 host:port entries`);
      }
      break;
    }
    case "workloadStatus": {
      const s = p.value;
      const workload = r.model.get("workload", s.workloadId);
      // A workload of another cluster is outside this session's membership; an unknown one (deleted
      // meanwhile) is logged and otherwise ignored.
      if (workload && workload.spec?.clusterId !== clusterId) {
        throw permissionDenied(
          `${at}: workload "${s.workloadId}" is not in cluster "${clusterId}"; a node reports only for its own cluster`,
        );
      }
      if (!(s.state in WorkloadState))
        throw invalidArgument(`${at}: workload_status.state is not a known WorkloadState`);
      if (s.message.length > 1024)
        throw invalidArgument(`${at}: workload_status.message must be at most 1024 characters`);
      if (s.stateChangedAt) requestTimestamp(s.stateChangedAt, `${at}: workload_status.state_changed_at`);
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
      break;
    }
    default:
      throw invalidArgument(`${at}: set one of heartbeat, workload_status or probe`);
  }
  return { nodeId: caller.id, clusterId, seq: req.seq, receivedAt: new Date(), payload: p };
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
