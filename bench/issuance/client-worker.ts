// One thread of load for the issuance bench: `connections` mTLS clients as the enrollment identity,
// each with `inflight` Sign calls outstanding, counting completions between "measure" and "stop".
import { performance } from "node:perf_hooks";
import { parentPort, workerData } from "node:worker_threads";
import { fromBinary } from "@bufbuild/protobuf";
import { CaService, SignRequestSchema } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { createRpcClient, type TlsCredentials } from "@fabric/platform";

export interface ClientWorkerData {
  url: string;
  serverId: string;
  credentials: TlsCredentials;
  requests: Uint8Array[];
  connections: number;
  inflight: number;
}

export interface ClientWorkerReport {
  issued: number;
  failed: number;
  firstError?: string;
  latenciesMs: number[];
}

const data = workerData as ClientWorkerData;
const requests = data.requests.map((r) => fromBinary(SignRequestSchema, r));
let measuring = false;
let stopping = false;
const report: ClientWorkerReport = { issued: 0, failed: 0, latenciesMs: [] };
let next = 0;

const clients = Array.from({ length: data.connections }, () =>
  createRpcClient(CaService, {
    url: data.url,
    credentials: data.credentials,
    expectServerId: data.serverId,
    timeoutMs: 60_000,
  }),
);

async function loop(client: (typeof clients)[number]): Promise<void> {
  while (!stopping) {
    const request = requests[next++ % requests.length]!;
    const t0 = performance.now();
    try {
      await client.sign(request);
      if (measuring) {
        report.issued++;
        report.latenciesMs.push(performance.now() - t0);
      }
    } catch (err) {
      report.failed++;
      report.firstError ??= (err as Error).message;
    }
  }
}

const loops = clients.flatMap((c) => Array.from({ length: data.inflight }, () => loop(c)));
parentPort!.on("message", (msg: "measure" | "stop") => {
  if (msg === "measure") measuring = true;
  else {
    measuring = false;
    stopping = true;
    void Promise.all(loops).then(() => parentPort!.postMessage(report));
  }
});
parentPort!.postMessage("started");
