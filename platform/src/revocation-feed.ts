import type { Client } from "@connectrpc/connect";
import type { CaService, RevokedEntry as ProtoRevokedEntry } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { sleep, systemClock, type Clock, type ClockTimer } from "./clock.js";
import type { Logger } from "./logger.js";
import { principalKey, type RevocationSet, type RevokedEntry } from "./revocation.js";

const KIND_NAMES: Record<number, string> = {
  [PrincipalKind.NODE]: "node",
  [PrincipalKind.SERVICE]: "service",
  [PrincipalKind.USER]: "user",
  [PrincipalKind.ADMIN]: "admin",
};

export function toRevokedEntry(e: ProtoRevokedEntry): RevokedEntry {
  const entry: RevokedEntry = {
    notAfter: e.notAfter ? timestampDate(e.notAfter) : new Date(8.64e15),
  };
  if (e.serial) entry.serialHex = e.serial;
  if (e.principalId) entry.principal = principalKey(KIND_NAMES[e.principalKind] ?? "unknown", e.principalId);
  if (e.revokedAt) entry.revokedAt = timestampDate(e.revokedAt);
  return entry;
}

/** How often entries past their retention (revocation.ts) are dropped. */
const PRUNE_INTERVAL_MS = 60_000;

/**
 * Keeps `set` in step with the CA's WatchRevocations (list then watch, resuming from the last version
 * held, relisting when the CA says so), reconnecting with exponential backoff and full jitter until
 * the signal aborts. `onSynced` fires after each complete list, e.g. to declare readiness.
 */
export async function followRevocations(
  ca: Client<typeof CaService>,
  set: RevocationSet,
  options: { logger: Logger; signal: AbortSignal; onSynced?: () => void; clock?: Clock },
): Promise<void> {
  const clock = options.clock ?? systemClock;
  let failures = 0;
  let prune: ClockTimer | undefined;
  const schedulePrune = () => {
    prune = clock.setTimeout(() => {
      set.prune(new Date(clock.now()));
      schedulePrune();
    }, PRUNE_INTERVAL_MS);
  };
  schedulePrune();
  try {
    while (!options.signal.aborted) {
      let listing: RevokedEntry[] | undefined;
      let listVersion = 0n;
      try {
        for await (const res of ca.watchRevocations(
          { resumeFromVersion: set.version },
          { signal: options.signal, timeoutMs: 0 },
        )) {
          const event = res.event;
          if (event.case === "list") {
            // A full list arrives in chunks (the first with reset) and replaces the set at `synced`.
            if (event.value.reset || !listing) listing = [];
            listing.push(...event.value.entries.map(toRevokedEntry));
            listVersion = event.value.version;
          } else if (event.case === "synced") {
            if (listing)
              set.replace(listing, event.value.version > listVersion ? event.value.version : listVersion);
            else set.version = event.value.version;
            listing = undefined;
            failures = 0;
            options.onSynced?.();
          } else if (event.case === "revoked") {
            set.add(toRevokedEntry(event.value));
            set.version = event.value.version;
          }
        }
      } catch (err) {
        if (options.signal.aborted) return;
        failures += 1;
        options.logger.warn(
          { err: (err as Error).message, failures },
          "revocation feed interrupted; reconnecting",
        );
      }
      const delay = Math.random() * Math.min(30_000, 250 * 2 ** Math.min(failures, 8));
      await sleep(clock, delay, options.signal);
    }
  } finally {
    if (prune) clock.clearTimeout(prune);
  }
}
