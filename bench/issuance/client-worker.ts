// One thread of load for the issuance bench: `connections` mTLS HTTP/2 connections as the enrollment
// identity, each with `inflight` calls outstanding. Per phase the parent says what to call ("sign", or
// "rpc": GetTrustBundle, the RPC layer with no work behind it), then "measure", then "stop", and gets the
// completions counted in between.
import { performance } from "node:perf_hooks";
import { parentPort, workerData } from "node:worker_threads";
import { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import type { TlsCredentials } from "@fabric/platform";
import { connectGrpc, grpcFrame, requestSign, type GrpcConnection } from "./sign-client.js";

export interface ClientWorkerData {
  url: string;
  serverId: string;
  credentials: TlsCredentials;
  /** Encoded SignRequest messages, used in turn. */
  requests: Uint8Array[];
  connections: number;
  inflight: number;
}

export type Phase = "sign" | "rpc";
export type ClientWorkerCommand = { run: Phase } | "measure" | "stop";

export interface ClientWorkerReport {
  done: number;
  failed: number;
  firstError?: string;
  latenciesMs: number[];
}

const data = workerData as ClientWorkerData;
const frames = data.requests.map(grpcFrame);
const TRUST_BUNDLE_PATH = `/${CaService.typeName}/${CaService.method.getTrustBundle.name}`;
const EMPTY_REQUEST = grpcFrame(new Uint8Array(0));

const calls: Record<Phase, (connection: GrpcConnection, i: number) => Promise<unknown>> = {
  sign: (connection, i) => requestSign(connection, frames[i % frames.length]!),
  rpc: (connection) => connection.call(TRUST_BUNDLE_PATH, EMPTY_REQUEST),
};

const connections = await Promise.all(
  Array.from({ length: data.connections }, () => connectGrpc(data.url, data.credentials, data.serverId)),
);

let phase: { loops: Promise<void>[]; report: ClientWorkerReport; measuring: boolean; stopping: boolean };

function run(which: Phase): void {
  const call = calls[which];
  const state = {
    loops: [] as Promise<void>[],
    report: { done: 0, failed: 0, latenciesMs: [] } as ClientWorkerReport,
    measuring: false,
    stopping: false,
  };
  let next = 0;
  const loop = async (connection: GrpcConnection) => {
    while (!state.stopping) {
      const t0 = performance.now();
      try {
        await call(connection, next++);
        if (state.measuring) {
          state.report.done++;
          state.report.latenciesMs.push(performance.now() - t0);
        }
      } catch (err) {
        state.report.failed++;
        state.report.firstError ??= (err as Error).message;
      }
    }
  };
  state.loops = connections.flatMap((c) => Array.from({ length: data.inflight }, () => loop(c)));
  phase = state;
}

parentPort!.on("message", (command: ClientWorkerCommand) => {
  if (command === "measure") phase.measuring = true;
  else if (command === "stop") {
    const stopped = phase;
    stopped.measuring = false;
    stopped.stopping = true;
    void Promise.all(stopped.loops).then(() => parentPort!.postMessage(stopped.report));
  } else run(command.run);
});
parentPort!.postMessage("started");
