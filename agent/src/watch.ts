import type { Client } from "@connectrpc/connect";
import type { RouterService, SignedSnapshot } from "@fabric/proto/fabric/router/v1/router_pb.js";

export interface SnapshotWatchOptions {
  client: Client<typeof RouterService>;
  /** The version of the last verified snapshot, sent on every (re)connect so the router resumes there. */
  knownVersion(): bigint;
  /** This node and its cluster (the router checks them against the client certificate). */
  nodeId: string;
  clusterId: string;
  /** Each snapshot as it arrives; verification and applying are the caller's. */
  onSnapshot(envelope: SignedSnapshot): void;
}

/**
 * A Watch that has not failed after this long is taken as established. The router sends nothing (not
 * even response headers: connect commits them with the first message) while it has nothing newer than
 * our version, so there is no earlier signal that the stream is up.
 */
const QUIET_ESTABLISHED_MS = 2_000;

/** The router Watch stream, one connection per call; ReconnectingStream keeps it open. */
export function snapshotWatch(options: SnapshotWatchOptions) {
  return async (signal: AbortSignal, established: () => void): Promise<void> => {
    const quiet = setTimeout(established, QUIET_ESTABLISHED_MS);
    try {
      const stream = options.client.watch(
        { knownVersion: options.knownVersion(), nodeId: options.nodeId, clusterId: options.clusterId },
        { signal, timeoutMs: 0, onHeader: () => established() },
      );
      for await (const res of stream) {
        established();
        if (res.signedSnapshot) options.onSnapshot(res.signedSnapshot);
      }
    } finally {
      clearTimeout(quiet);
    }
  };
}
