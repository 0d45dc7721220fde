import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import type { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { SessionRequestSchema, type SessionRequest } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import {
  WorkloadStatusReportSchema,
  type Directive,
  type Heartbeat,
  type ProbeReport,
  type WorkloadStatusReport,
} from "@fabric/proto/fabric/registry/v1/session_pb.js";
import { AsyncQueue } from "./async-queue.js";
import type { WorkloadView } from "./supervisor/workload-runner.js";

type Payload = SessionRequest["payload"];

export interface SessionOptions {
  client: Client<typeof RegistryService>;
  heartbeatIntervalMs: number;
  statusReportIntervalMs: number;
  /** A fresh heartbeat (load, health, snapshot version) each time one is due. */
  heartbeat(): Heartbeat;
  /** The current status of every workload, re-sent periodically. */
  statuses(): WorkloadStatusReport[];
  onDirective(directive: Directive): void;
}

/**
 * The registry Session: heartbeats on an interval, each workload's status on every change and at least
 * every `statusReportIntervalMs`, and probe results, each with a per-stream sequence number. Workload
 * statuses stay pending until acknowledged and are re-sent on the next stream; heartbeats and probes are
 * superseded by newer ones, so they are never replayed.
 */
export class RegistrySession {
  private readonly pending = new Map<string, { report: WorkloadStatusReport; seq: bigint | undefined }>();
  private send: ((payload: Payload) => bigint) | undefined;

  constructor(private readonly options: SessionOptions) {}

  reportWorkload(report: WorkloadStatusReport): void {
    const entry = { report, seq: undefined as bigint | undefined };
    this.pending.set(report.workloadId, entry);
    if (this.send) entry.seq = this.send({ case: "workloadStatus", value: report });
  }

  reportProbe(report: ProbeReport): void {
    this.send?.({ case: "probe", value: report });
  }

  /** Resolves once every workload status sent so far is acknowledged, or after `timeoutMs`. */
  async delivered(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.pending.size > 0 && this.send && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** One stream, for ReconnectingStream.attempt. */
  async attempt(signal: AbortSignal, established: () => void): Promise<void> {
    const outgoing = new AsyncQueue<SessionRequest>();
    let seq = 0n;
    const send = (payload: Payload): bigint => {
      seq += 1n;
      outgoing.push(create(SessionRequestSchema, { seq, payload }));
      return seq;
    };
    const heartbeat = () => send({ case: "heartbeat", value: this.options.heartbeat() });
    const resendStatuses = () => {
      for (const report of this.options.statuses()) this.reportWorkload(report);
    };
    heartbeat();
    for (const entry of this.pending.values()) {
      entry.seq = send({ case: "workloadStatus", value: entry.report });
    }
    this.send = send;
    const timers = [
      setInterval(heartbeat, this.options.heartbeatIntervalMs),
      setInterval(resendStatuses, this.options.statusReportIntervalMs),
    ];
    try {
      for await (const res of this.options.client.session(outgoing, { signal, timeoutMs: 0 })) {
        established();
        if (res.payload.case === "ack") {
          const acked = res.payload.value.ackedSeq;
          for (const [id, entry] of this.pending) {
            if (entry.seq !== undefined && entry.seq <= acked) this.pending.delete(id);
          }
        } else if (res.payload.case === "directive") {
          this.options.onDirective(res.payload.value);
        }
      }
    } finally {
      this.send = undefined;
      for (const timer of timers) clearInterval(timer);
      outgoing.close();
      // Sequence numbers restart on the next stream: nothing sent on this one counts as delivered.
      for (const entry of this.pending.values()) entry.seq = undefined;
    }
  }
}

/** A workload's status as the registry takes it. */
export function workloadStatusReport(view: WorkloadView): WorkloadStatusReport {
  return create(WorkloadStatusReportSchema, {
    workloadId: view.id,
    generation: view.generation,
    state: view.state,
    restarts: view.restarts,
    lastExitCode: view.lastExitCode,
    message: view.message,
    stateChangedAt: timestampFromDate(view.stateChangedAt),
  });
}
