// One thread of simulated agents for the fan-out bench. Each agent has its own node certificate, so its
// own mTLS HTTP/2 connection, and holds the router Watch the way fabric-agent does: the agent's own
// snapshotWatch inside its ReconnectingStream (exponential backoff with full jitter), resuming from the
// last version it applied. Every `verifyEvery`-th agent verifies each snapshot like the agent
// (verifySignedSnapshot); the others only decode it. In "idle" mode the agents instead open the same
// call once against the plain HTTP/2 baseline server (idle-server.ts), which answers headers and holds
// the stream until it broadcasts one message; each agent decodes it like a snapshot.
import { setMaxListeners } from "node:events";
import { performance } from "node:perf_hooks";
import { parentPort, workerData } from "node:worker_threads";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { createLogger, createRpcClient, type TlsCredentials } from "@fabric/platform";
import {
  RouterService,
  SnapshotSchema,
  type SignedSnapshot,
} from "@fabric/proto/fabric/router/v1/router_pb.js";
import { ReconnectingStream } from "../../agent/src/reconnecting-stream.js";
import { verifySignedSnapshot } from "../../agent/src/snapshot-verifier.js";
import { snapshotWatch } from "../../agent/src/watch.js";

export interface AgentWorkerData {
  trustDomain: string;
  clusterId: string;
  agents: { id: string; credentials: TlsCredentials }[];
  /** Agents of this thread that verify every snapshot: those whose index is a multiple of this. */
  verifyEvery: number;
  /** Connections being opened at once while the agents first connect. */
  rampInFlight: number;
  /** fabric-agent's defaults (reconnectBaseMs, reconnectMaxMs). */
  backoff: { baseMs: number; capMs: number };
  /** The workload whose generation marks a change. */
  workloadId: string;
}

export type ToWorker =
  | { kind: "watch"; url: string }
  | { kind: "idle"; url: string }
  | { kind: "expect"; generation: bigint }
  /** The report once every agent holds the expected generation; `now`: the deadline passed, send it. */
  | { kind: "report"; now: boolean };

export type FromWorker =
  | { kind: "started" }
  | { kind: "connected"; failed: number; firstError?: string }
  | { kind: "report"; report: WorkerReport };

export interface WorkerReport {
  /**
   * Per agent: when (ms since the epoch, high resolution) it first held the expected generation (idle
   * mode: received the broadcast) since the last "expect"; NaN = not yet.
   */
  receivedAt: number[];
  /** Snapshots verified like the agent does, and refused (with the first reason). */
  verified: number;
  refused: number;
  firstRefusal?: string;
  /** Watch attempts made (the first connection included) and fatal errors (the agent would stop). */
  attempts: number;
  fatal: number;
  /**
   * Errors thrown outside any call (connect-node destroys a connection whose keepalive PING went
   * unanswered for 15 s with nobody listening for the error): each would have crashed a fabric-agent.
   */
  uncaught: number;
  firstUncaught?: string;
}

const data = workerData as AgentWorkerData;
const logger = createLogger({ service: "fanout-agent", level: "silent" });
const serverId = `spiffe://${data.trustDomain}/service/router`;
const now = () => performance.timeOrigin + performance.now();
const stop = new AbortController();
// Every agent's reconnect loop listens on it.
setMaxListeners(0, stop.signal);

const report: WorkerReport = {
  receivedAt: data.agents.map(() => Number.NaN),
  verified: 0,
  refused: 0,
  attempts: 0,
  fatal: 0,
  uncaught: 0,
};
process.on("uncaughtException", (err) => {
  report.uncaught++;
  report.firstUncaught ??= err.message;
});
let expected: bigint | undefined;
/** Agents holding the expected generation. */
let holding = 0;

function post(message: FromWorker): void {
  parentPort!.postMessage(message);
}

/** Opens every agent's connection, at most `rampInFlight` at a time, each slot held until `open` resolves. */
async function ramp(open: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(data.rampInFlight, data.agents.length) }, async () => {
      while (next < data.agents.length) await open(next++);
    }),
  );
}

function clientFor(i: number, url: string) {
  return createRpcClient(RouterService, {
    url,
    credentials: data.agents[i]!.credentials,
    expectServerId: serverId,
    // as fabric-agent: PINGs notice a half-open connection
    keepaliveMs: 15_000,
  });
}

/** The agents, each keeping its Watch open like fabric-agent; resolves once each holds a snapshot. */
async function watchAll(url: string): Promise<void> {
  let failed = 0;
  let firstError: string | undefined;
  await ramp(
    (i) =>
      new Promise<void>((first) => {
        const agent = data.agents[i]!;
        const verifies = i % data.verifyEvery === 0;
        let applied = 0n;
        const onSnapshot = (envelope: SignedSnapshot) => {
          const at = now();
          first();
          let version: bigint;
          let generation: bigint | undefined;
          if (verifies) {
            try {
              const { snapshot } = verifySignedSnapshot(
                envelope,
                {
                  trustDomain: data.trustDomain,
                  nodeId: agent.id,
                  clusterId: data.clusterId,
                  caBundlePem: agent.credentials.caBundlePem,
                },
                applied,
              );
              report.verified++;
              version = snapshot.version;
              generation = snapshot.workloads.find((w) => w.spec?.id === data.workloadId)?.generation;
            } catch (err) {
              report.refused++;
              report.firstRefusal ??= (err as Error).message;
              return;
            }
          } else {
            const snapshot = fromBinary(SnapshotSchema, envelope.snapshot);
            version = snapshot.version;
            generation = snapshot.workloads.find((w) => w.spec?.id === data.workloadId)?.generation;
          }
          applied = version;
          if (generation !== undefined && expected !== undefined && generation >= expected) received(i, at);
        };
        const watch = snapshotWatch({
          client: clientFor(i, url),
          knownVersion: () => applied,
          nodeId: agent.id,
          clusterId: data.clusterId,
          onSnapshot,
        });
        new ReconnectingStream({
          name: "router watch",
          logger,
          signal: stop.signal,
          backoff: data.backoff,
          attempt: (signal, established) => {
            report.attempts++;
            return watch(signal, established);
          },
          onState: () => {},
          isFatal: (err) => ConnectError.from(err).code === Code.Unauthenticated,
          onFatal: (err) => {
            report.fatal++;
            failed++;
            firstError ??= (err as Error).message;
            first();
          },
        });
      }),
  );
  post({ kind: "connected", failed, ...(firstError ? { firstError } : {}) });
}

/** The baseline: the same clients open the same call to a server that answers headers and holds it. */
async function idleAll(url: string): Promise<void> {
  let failed = 0;
  let firstError: string | undefined;
  await ramp(async (i) => {
    const agent = data.agents[i]!;
    try {
      await new Promise<void>((headers, reject) => {
        const stream = clientFor(i, url).watch(
          { nodeId: agent.id, clusterId: data.clusterId },
          { signal: stop.signal, timeoutMs: 0, onHeader: () => headers() },
        );
        void (async () => {
          // The baseline server's broadcast: decoded like a snapshot, not verified.
          for await (const res of stream) {
            const at = now();
            fromBinary(SnapshotSchema, res.signedSnapshot?.snapshot ?? new Uint8Array());
            received(i, at);
          }
        })().catch(reject);
      });
    } catch (err) {
      failed++;
      firstError ??= (err as Error).message;
    }
  });
  post({ kind: "connected", failed, ...(firstError ? { firstError } : {}) });
}

/** Agent `i` holds what is expected: the generation (watching) or any broadcast (idle). */
function received(i: number, at: number): void {
  if (expected === undefined || !Number.isNaN(report.receivedAt[i]!)) return;
  report.receivedAt[i] = at;
  holding++;
  maybeDone();
}

let waiting = false;
function maybeDone(): void {
  if (waiting && holding === data.agents.length) {
    waiting = false;
    post({ kind: "report", report });
  }
}

parentPort!.on("message", (msg: ToWorker) => {
  switch (msg.kind) {
    case "watch":
      void watchAll(msg.url);
      break;
    case "idle":
      void idleAll(msg.url);
      break;
    case "expect":
      expected = msg.generation;
      report.receivedAt.fill(Number.NaN);
      holding = 0;
      break;
    case "report":
      if (msg.now) {
        // The deadline passed: what there is, unless the complete report has just been sent.
        if (waiting) {
          waiting = false;
          post({ kind: "report", report });
        }
      } else {
        waiting = true;
        maybeDone();
      }
      break;
  }
});
post({ kind: "started" });
