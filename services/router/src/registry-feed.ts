import type { Client } from "@connectrpc/connect";
import type { Logger } from "@fabric/platform";
import type { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { DirtySet } from "./dirty-set.js";
import { FabricModel } from "./fabric-model.js";
import type { SnapshotEngine } from "./snapshot-engine.js";

/**
 * Keeps the engine's model in step with the registry's WatchChanges (list, then watch): a full list
 * is built into a fresh model and swapped in whole at `synced`; changes after it are applied one by
 * one. After an interruption it resumes from the last version held; when the registry answers with a
 * new full list instead (`reset`), the model is rebuilt from it. Reconnects with exponential backoff
 * and full jitter until the signal aborts. `onSynced` fires after every complete list or replay.
 */
export async function followRegistryChanges(
  registry: Client<typeof RegistryService>,
  engine: SnapshotEngine,
  options: { logger: Logger; signal: AbortSignal; onSynced?: (version: bigint) => void },
): Promise<void> {
  let failures = 0;
  while (!options.signal.aborted) {
    let listing: FabricModel | undefined;
    try {
      const resumeFromVersion = engine.synced ? engine.version : 0n;
      for await (const res of registry.watchChanges(
        { resumeFromVersion },
        { signal: options.signal, timeoutMs: 0 },
      )) {
        const event = res.event;
        if (event.case === "list") {
          if (event.value.reset || !listing) {
            if (event.value.resumeExpired) {
              options.logger.info({ resumeFromVersion }, "registry feed: resume point expired; relisting");
            }
            listing = new FabricModel();
          }
          // The list's own dirt is irrelevant: the swap recomputes everything.
          const ignored = new DirtySet();
          for (const change of event.value.events) listing.apply(change, ignored);
          listing.version = event.value.version;
        } else if (event.case === "synced") {
          if (listing) {
            if (event.value.version > listing.version) listing.version = event.value.version;
            const stats = engine.load(listing);
            options.logger.info(
              { version: listing.version, nodes: listing.nodes.size, ...stats },
              "registry feed: model loaded",
            );
            listing = undefined;
          } else {
            engine.advance(event.value.version);
          }
          failures = 0;
          options.onSynced?.(engine.version);
        } else if (event.case === "change") {
          if (listing) listing.apply(event.value, new DirtySet());
          else if (engine.synced) engine.apply(event.value);
        }
      }
      // The registry ended the stream (e.g. it is shutting down): reconnect and resume.
    } catch (err) {
      if (options.signal.aborted) return;
      failures += 1;
      options.logger.warn(
        { err: (err as Error).message, failures },
        "registry feed interrupted; reconnecting",
      );
    }
    if (options.signal.aborted) return;
    const delay = Math.random() * Math.min(30_000, 250 * 2 ** Math.min(failures, 8));
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, delay);
      options.signal.addEventListener(
        "abort",
        () => {
          clearTimeout(timer);
          resolve();
        },
        { once: true },
      );
    });
  }
}
