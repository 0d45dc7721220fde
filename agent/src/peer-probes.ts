import { connect } from "node:net";
import { create } from "@bufbuild/protobuf";
import { PeerTier, type Peer } from "@fabric/proto/fabric/router/v1/router_pb.js";
import { ProbeReportSchema, type ProbeReport } from "@fabric/proto/fabric/registry/v1/session_pb.js";
import { durationFromFractionalMs } from "./durations.js";

export interface ProbeSettings {
  timeoutMs: number;
  samples: number;
  maxPeers: number;
  /** Peers probed at the same time. */
  concurrency?: number;
}

/** TCP connect time to `host:port` in ms, or undefined when it fails or times out. */
export function connectLatency(address: string, timeoutMs: number): Promise<number | undefined> {
  const at = address.lastIndexOf(":");
  const host = address.slice(0, at).replace(/^\[(.*)\]$/, "$1");
  const port = Number(address.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    const socket = connect({ host, port });
    const finish = (latency: number | undefined) => {
      socket.destroy();
      resolve(latency);
    };
    socket.setTimeout(timeoutMs, () => finish(undefined));
    socket.once("connect", () => finish(Number(process.hrtime.bigint() - started) / 1e6));
    socket.once("error", () => finish(undefined));
  });
}

/** Which peers to probe this round: active first, then warm, then cold, at most `maxPeers`. */
export function peersToProbe(peers: Peer[], maxPeers: number): Peer[] {
  const rank = (tier: PeerTier) => (tier === PeerTier.UNSPECIFIED ? 9 : tier);
  return [...peers]
    .filter((p) => p.addresses.length > 0)
    .sort((a, b) => rank(a.tier) - rank(b.tier))
    .slice(0, maxPeers);
}

/** Probes one peer `samples` times (its first reachable address each time): median latency and loss. */
export async function probePeer(peer: Peer, settings: ProbeSettings): Promise<ProbeReport> {
  const latencies: number[] = [];
  for (let i = 0; i < settings.samples; i++) {
    let latency: number | undefined;
    for (const address of peer.addresses) {
      latency = await connectLatency(address, settings.timeoutMs);
      if (latency !== undefined) break;
    }
    if (latency !== undefined) latencies.push(latency);
  }
  latencies.sort((a, b) => a - b);
  const median = latencies.length > 0 ? latencies[Math.floor(latencies.length / 2)]! : undefined;
  return create(ProbeReportSchema, {
    peerNodeId: peer.nodeId,
    ...(median !== undefined ? { latency: durationFromFractionalMs(median) } : {}),
    lossRatio: 1 - latencies.length / settings.samples,
    samples: settings.samples,
  });
}

/** One probe round over the chosen peers, a few at a time; reports each result as it completes. */
export async function probeRound(
  peers: Peer[],
  settings: ProbeSettings,
  report: (r: ProbeReport) => void,
  signal: AbortSignal,
): Promise<void> {
  const queue = peersToProbe(peers, settings.maxPeers);
  const workers = Array.from({ length: Math.min(settings.concurrency ?? 4, queue.length) }, async () => {
    for (let peer = queue.shift(); peer && !signal.aborted; peer = queue.shift()) {
      report(await probePeer(peer, settings));
    }
  });
  await Promise.all(workers);
}
