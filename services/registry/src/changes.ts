import type { Tx } from "@fabric/platform";
import {
  encodeEntity,
  entityClusters,
  entityKey,
  keyOnly,
  type AnyEntity,
  type EntityKind,
  type EntityTypes,
} from "./entities.js";
import { LOADERS } from "./loaders.js";

/** The channel every registry process LISTENs on; the payload is the highest version committed. */
export const CHANGES_CHANNEL = "registry_changes";

/**
 * The entities one transaction touched. At the end of the transaction writeChanges captures each as it
 * then is (or as deleted) into the changes table.
 */
export class ChangeSet {
  private readonly touched = new Map<string, { kind: EntityKind; key: string; last?: AnyEntity }>();

  /** Marks an entity as changed; its state is read at the end of the transaction. */
  touch(kind: EntityKind, key: string): void {
    const id = `${kind}:${key}`;
    if (!this.touched.has(id)) this.touched.set(id, { kind, key });
  }

  /** Marks an entity as deleted, keeping its last state so watchers learn its cluster and key. */
  remove<K extends EntityKind>(kind: K, entity: EntityTypes[K]): void {
    const key = entityKey(kind, entity);
    this.touched.set(`${kind}:${key}`, { kind, key, last: entity });
  }

  get size(): number {
    return this.touched.size;
  }

  byKind(): Map<EntityKind, { key: string; last?: AnyEntity }[]> {
    const out = new Map<EntityKind, { key: string; last?: AnyEntity }[]>();
    for (const t of this.touched.values()) out.set(t.kind, [...(out.get(t.kind) ?? []), t]);
    return out;
  }
}

/**
 * Writes the touched entities to the changes table and notifies listeners, inside the caller's
 * transaction; returns the highest version written. The advisory lock is taken before versions are
 * allocated and held to commit, so versions become visible in the order they were allocated, and the
 * entities are read after taking it, so each row captures the state every earlier version led to.
 * Call it last in the transaction (before the audit append, which the transaction helper does at
 * commit), so the lock is held as briefly as possible and always taken before the audit chain's.
 */
export async function writeChanges(tx: Tx, set: ChangeSet): Promise<bigint | undefined> {
  if (set.size === 0) return undefined;
  await tx.query("SELECT pg_advisory_xact_lock(hashtextextended('fabric.registry.changes', 0))");
  const kinds: string[] = [];
  const keys: string[] = [];
  const clusterIds: string[] = [];
  const deleted: boolean[] = [];
  const payloads: Buffer[] = [];
  for (const [kind, entries] of set.byKind()) {
    const found = new Map<string, AnyEntity>();
    for (const entity of await LOADERS[kind](
      tx,
      entries.map((e) => e.key),
    )) {
      found.set(entityKey(kind, entity as never), entity);
    }
    for (const { key, last } of entries) {
      const current = found.get(key);
      const entity = current ?? last ?? keyOnly(kind, key);
      kinds.push(kind);
      keys.push(key);
      // Postgres text[] literals of text[] values: one JSON array per row, unpacked below.
      clusterIds.push(JSON.stringify(entityClusters(kind, entity as never)));
      deleted.push(current === undefined);
      payloads.push(Buffer.from(encodeEntity(kind, entity as never)));
    }
  }
  const { rows } = await tx.query<{ version: string }>(
    `INSERT INTO changes (kind, entity_key, cluster_ids, deleted, payload)
     SELECT k, key, ARRAY(SELECT jsonb_array_elements_text(c::jsonb)), d, p
     FROM unnest($1::text[], $2::text[], $3::text[], $4::boolean[], $5::bytea[]) AS u(k, key, c, d, p)
     RETURNING version::text`,
    [kinds, keys, clusterIds, deleted, payloads],
  );
  const version = rows.reduce((max, r) => (BigInt(r.version) > max ? BigInt(r.version) : max), 0n);
  await tx.query("SELECT pg_notify($1, $2)", [CHANGES_CHANNEL, version.toString()]);
  return version;
}
