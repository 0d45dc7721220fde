import { create } from "@bufbuild/protobuf";
import {
  WatchChangesResponseSchema,
  type WatchChangesResponse,
} from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import type { ChangeEvent } from "@fabric/proto/fabric/registry/v1/changes_pb.js";
import type { Handlers, Registry } from "./context.js";
import { ROUTER_CASES, changeEvent, entityClusters, isRouterKind, type RouterKind } from "./entities.js";
import type { FeedChange } from "./model.js";

// Entities per `list` message (the contract's limit).
const LIST_CHUNK = 1000;

/**
 * WatchChanges, list-then-watch (the protocol in registry.proto and changes.proto): a client without
 * state, or whose version is no longer retained, gets the full router-visible state at version V as
 * `list` chunks (the first with `reset`), then `synced` V; a client resuming from a retained version gets
 * the changes after it, then `synced`. Either way the live changes follow, in version order, filtered to
 * the requested clusters. The live subscription starts before the list or replay is read, so nothing
 * committed meanwhile is missed, and changes at or below the synced version are not repeated.
 */
export function watchChangesHandlers(r: Registry): Handlers<"watchChanges"> {
  return {
    async *watchChanges(req) {
      const clusters = new Set(req.clusterIds);
      const wanted = (c: { kind: string; clusterIds: string[] }): boolean =>
        isRouterKind(c.kind as never) && (clusters.size === 0 || c.clusterIds.some((id) => clusters.has(id)));
      const live = r.feed.subscribe();
      try {
        let upTo = r.model.version;
        let replay: Iterable<FeedChange> | AsyncIterable<FeedChange> | undefined;
        let expired = false;
        if (req.resumeFromVersion > 0n) {
          if (req.resumeFromVersion > upTo)
            expired = true; // a version this registry never issued
          else {
            try {
              replay = await r.feed.replay(req.resumeFromVersion, upTo);
            } catch {
              replay = undefined; // the database is unreachable and memory does not reach back: relist
            }
            expired = replay === undefined;
          }
        }
        if (replay) {
          for await (const c of replay) if (wanted(c)) yield changeMessage(c);
        } else {
          // Taken now, in one synchronous pass, so the list is exactly the state at upTo.
          upTo = r.model.version;
          yield* listChunks(r, upTo, expired, wanted);
        }
        yield create(WatchChangesResponseSchema, { event: { case: "synced", value: { version: upTo } } });
        for await (const c of live) {
          if (c.version > upTo && wanted(c)) yield changeMessage(c);
        }
      } finally {
        live.close();
      }
    },
  };
}

function changeMessage(c: FeedChange): WatchChangesResponse {
  return create(WatchChangesResponseSchema, {
    event: { case: "change", value: changeEvent(c.kind as RouterKind, c.version, c.deleted, c.entity) },
  });
}

/** The full router-visible state at `version` as list messages, read from the model before returning. */
function listChunks(
  r: Registry,
  version: bigint,
  resumeExpired: boolean,
  wanted: (c: { kind: string; clusterIds: string[] }) => boolean,
): WatchChangesResponse[] {
  const events: ChangeEvent[] = [];
  for (const kind of Object.keys(ROUTER_CASES) as RouterKind[]) {
    for (const e of r.model.entries(kind)) {
      if (wanted({ kind, clusterIds: entityClusters(kind, e.value) })) {
        events.push(changeEvent(kind, e.version, false, e.value));
      }
    }
  }
  const chunks: WatchChangesResponse[] = [];
  for (let i = 0; i === 0 || i < events.length; i += LIST_CHUNK) {
    chunks.push(
      create(WatchChangesResponseSchema, {
        event: {
          case: "list",
          value: {
            version,
            reset: i === 0,
            resumeExpired: i === 0 && resumeExpired,
            events: events.slice(i, i + LIST_CHUNK),
          },
        },
      }),
    );
  }
  return chunks;
}
