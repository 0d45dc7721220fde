import type { PublishedSnapshot } from "./snapshot-signer.js";

/** The node's membership is gone: its streams end. */
export const GONE = Symbol("gone");
export type Delivery = PublishedSnapshot | typeof GONE;

/**
 * One Watch stream's mailbox: a single pending slot. A new version replaces one not yet taken, so a
 * slow agent gets the latest version when it is ready, and the router never queues more than one
 * snapshot per stream however fast versions come.
 */
export class Subscription {
  private pending: Delivery | undefined;
  private wake: (() => void) | undefined;

  constructor(
    readonly key: string,
    private readonly unsubscribe: (s: Subscription) => void,
  ) {}

  offer(delivery: Delivery): void {
    this.pending = delivery;
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** The latest undelivered snapshot, waiting for one; undefined once the signal aborts. */
  async next(signal: AbortSignal): Promise<Delivery | undefined> {
    while (this.pending === undefined) {
      if (signal.aborted) return undefined;
      await new Promise<void>((resolve) => {
        const onAbort = () => resolve();
        signal.addEventListener("abort", onAbort, { once: true });
        this.wake = () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        };
      });
      this.wake = undefined;
    }
    const delivery = this.pending;
    this.pending = undefined;
    return delivery;
  }

  close(): void {
    this.unsubscribe(this);
  }
}

/**
 * Deliveries handed to streams per turn of the event loop. One registry change can give thousands of
 * nodes a new version at once; each stream then signs, serializes and writes. Handed over in slices,
 * the first agents' bytes are on the wire while the rest are still being prepared, and incoming
 * traffic (keepalive PINGs, new connections) is served in between instead of after the whole batch.
 */
const DELIVERY_SLICE = 256;

/** Open Watch streams by snapshot key (cluster/node); several streams may watch one key. */
export class SnapshotHub {
  private readonly subscribers = new Map<string, Set<Subscription>>();
  /** Deliveries not yet handed to the streams, oldest first; a newer one for a key replaces the queued one. */
  private readonly queue = new Map<string, Delivery>();
  private draining = false;

  get streams(): number {
    let n = 0;
    for (const set of this.subscribers.values()) n += set.size;
    return n;
  }

  subscribe(key: string): Subscription {
    const sub = new Subscription(key, (s) => {
      const set = this.subscribers.get(s.key);
      set?.delete(s);
      if (set?.size === 0) this.subscribers.delete(s.key);
    });
    let set = this.subscribers.get(key);
    if (!set) this.subscribers.set(key, (set = new Set()));
    set.add(sub);
    return sub;
  }

  /** Hands `delivery` to the key's streams, on a later turn of the event loop (see DELIVERY_SLICE). */
  deliver(key: string, delivery: Delivery): void {
    // Nobody watching: a stream that subscribes later reads the engine's current snapshot itself.
    if (!this.subscribers.has(key)) return;
    this.queue.set(key, delivery);
    if (this.draining) return;
    this.draining = true;
    setImmediate(() => this.drain());
  }

  private drain(): void {
    let handed = 0;
    for (const [key, delivery] of this.queue) {
      this.queue.delete(key);
      for (const sub of this.subscribers.get(key) ?? []) sub.offer(delivery);
      if (++handed === DELIVERY_SLICE) break;
    }
    if (this.queue.size > 0) setImmediate(() => this.drain());
    else this.draining = false;
  }
}

export function snapshotKey(clusterId: string, nodeId: string): string {
  return `${clusterId}/${nodeId}`;
}
