// A WatchChanges client from the test side: collects every message, applies the protocol the way the
// router does (list resets state, changes update it), and can be stopped and resumed.
import { ConnectError, type Client } from "@connectrpc/connect";
import type { ChangeEvent } from "@fabric/proto/fabric/registry/v1/changes_pb.js";
import type { RegistryService, WatchChangesResponse } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { eventually } from "./calls.js";

export interface TestWatcher {
  messages: WatchChangesResponse[];
  /** Changes received after the list or replay, in arrival order. */
  changes: ChangeEvent[];
  /** The version of the last `synced` or `change` applied. */
  version(): bigint;
  synced(): Promise<bigint>;
  /** Resolves with the first change matching `test`. */
  waitFor(test: (c: ChangeEvent) => boolean, timeoutMs?: number): Promise<ChangeEvent>;
  stop(): Promise<void>;
  ended: Promise<ConnectError | undefined>;
}

export function watch(
  client: Client<typeof RegistryService>,
  request: { resumeFromVersion?: bigint; clusterIds?: string[] } = {},
): TestWatcher {
  const abort = new AbortController();
  const messages: WatchChangesResponse[] = [];
  const changes: ChangeEvent[] = [];
  let version = request.resumeFromVersion ?? 0n;
  let syncedAt: bigint | undefined;
  const ended = (async () => {
    try {
      for await (const m of client.watchChanges(request, { signal: abort.signal, timeoutMs: 0 })) {
        messages.push(m);
        if (m.event.case === "synced") {
          version = m.event.value.version;
          syncedAt = version;
        } else if (m.event.case === "change") {
          changes.push(m.event.value);
          version = m.event.value.version;
        }
      }
      return undefined;
    } catch (err) {
      return abort.signal.aborted ? undefined : ConnectError.from(err);
    }
  })();
  return {
    messages,
    changes,
    version: () => version,
    synced: () => eventually(() => syncedAt),
    waitFor: (test, timeoutMs) => eventually(() => changes.find(test), timeoutMs),
    async stop() {
      abort.abort();
      await ended;
    },
    ended,
  };
}
