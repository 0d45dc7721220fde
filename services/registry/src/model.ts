import type { RoleAssignment } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import { ENTITY_KINDS, type AnyEntity, type EntityKind, type EntityTypes } from "./entities.js";

/** One entity as the model holds it: its message and the feed version at which it last changed. */
export interface Versioned<T> {
  version: bigint;
  value: T;
}

/** A committed change as read from the changes table. */
export interface FeedChange {
  version: bigint;
  kind: EntityKind;
  key: string;
  deleted: boolean;
  entity: AnyEntity;
  clusterIds: string[];
}

type Maps = { [K in EntityKind]: Map<string, Versioned<EntityTypes[K]>> };

/**
 * The registry's in-memory copy of its state, fed only by the change feed: reads, organization views,
 * session checks and WatchChanges lists are served from here, so they keep working while the database
 * is read-only or unreachable. `version` is the last feed version applied.
 */
export class Model {
  version = 0n;
  private maps = emptyMaps();
  /** Role assignments by `<cluster>/<node>`: a Session checks every workload status against them. */
  private holders = new Map<string, Map<string, RoleAssignment>>();
  private waiters: { version: bigint; resolve: () => void }[] = [];
  private readonly listeners = new Set<(change: FeedChange, previous: AnyEntity | undefined) => void>();

  get<K extends EntityKind>(kind: K, key: string): EntityTypes[K] | undefined {
    return this.maps[kind].get(key)?.value as EntityTypes[K] | undefined;
  }

  values<K extends EntityKind>(kind: K): EntityTypes[K][] {
    return [...this.maps[kind].values()].map((v) => v.value as EntityTypes[K]);
  }

  entries<K extends EntityKind>(kind: K): Versioned<EntityTypes[K]>[] {
    return [...this.maps[kind].values()] as Versioned<EntityTypes[K]>[];
  }

  /** The node's role assignments in the cluster. */
  assignmentsOf(clusterId: string, nodeId: string): RoleAssignment[] {
    return [...(this.holders.get(`${clusterId}/${nodeId}`)?.values() ?? [])];
  }

  /** Replaces everything with a snapshot read at `version` (start-up, or after the feed lost track). */
  reset(
    version: bigint,
    entities: { kind: EntityKind; key: string; version: bigint; value: AnyEntity }[],
  ): void {
    const maps = emptyMaps();
    for (const e of entities) (maps[e.kind] as Map<string, Versioned<AnyEntity>>).set(e.key, e);
    this.maps = maps;
    this.holders = new Map();
    for (const a of this.values("role_assignment")) this.addHolder(a);
    this.version = version;
    this.release();
  }

  apply(change: FeedChange): void {
    const map = this.maps[change.kind] as Map<string, Versioned<AnyEntity>>;
    const previous = map.get(change.key)?.value;
    if (change.deleted) map.delete(change.key);
    else map.set(change.key, { version: change.version, value: change.entity });
    if (change.kind === "role_assignment") {
      if (previous) this.dropHolder(previous as RoleAssignment);
      if (!change.deleted) this.addHolder(change.entity as RoleAssignment);
    }
    this.version = change.version;
    for (const listener of this.listeners) listener(change, previous);
    this.release();
  }

  /** Calls listener for every change applied from now on, with the entity's previous state. */
  onChange(listener: (change: FeedChange, previous: AnyEntity | undefined) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  /** Resolves true once `version` is applied, false after the timeout. */
  waitFor(version: bigint, timeoutMs: number): Promise<boolean> {
    if (this.version >= version) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve(false);
      }, timeoutMs);
      const waiter = {
        version,
        resolve: () => {
          clearTimeout(timer);
          resolve(true);
        },
      };
      this.waiters.push(waiter);
    });
  }

  private addHolder(a: RoleAssignment): void {
    const key = `${a.clusterId}/${a.nodeId}`;
    let held = this.holders.get(key);
    if (!held) this.holders.set(key, (held = new Map()));
    held.set(a.id, a);
  }

  private dropHolder(a: RoleAssignment): void {
    const key = `${a.clusterId}/${a.nodeId}`;
    const held = this.holders.get(key);
    held?.delete(a.id);
    if (held?.size === 0) this.holders.delete(key);
  }

  private release(): void {
    if (this.waiters.length === 0) return;
    const ready = this.waiters.filter((w) => w.version <= this.version);
    this.waiters = this.waiters.filter((w) => w.version > this.version);
    for (const w of ready) w.resolve();
  }
}

function emptyMaps(): Maps {
  return Object.fromEntries(ENTITY_KINDS.map((k) => [k, new Map()])) as Maps;
}
