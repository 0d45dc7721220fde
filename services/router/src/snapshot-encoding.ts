import { toBinary } from "@bufbuild/protobuf";
import { WorkloadSpecSchema } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import {
  EntryPolicySchema,
  ResourceReferenceSchema,
  type EntryPolicy,
  type PeerTier,
  type ResourceReference,
} from "@fabric/proto/fabric/router/v1/router_pb.js";
import type { WorkloadRecord } from "./fabric-model.js";

/**
 * The Snapshot wire encoding, written directly. Snapshots are rebuilt for thousands of nodes at a
 * time; protobuf-es's generic (reflective) serializer and the message objects it needs cost several
 * times the peer selection itself, so the hot parts (peers, routes) are written field by field, and
 * what repeats across snapshots (a candidate's id, addresses and region; a workload's spec) is encoded
 * once and copied. The result is standard protobuf: any decoder reads it as router.proto's Snapshot
 * (snapshot-encoding.test.ts decodes it with protobuf-es and compares field by field).
 */

/** Field numbers from router.proto. */
const SNAPSHOT = {
  nodeId: 1,
  clusterId: 2,
  version: 3,
  generatedAt: 4,
  roles: 5,
  peers: 6,
  routes: 7,
  entryPolicy: 8,
  workloads: 9,
  resources: 10,
} as const;
const PEER = { nodeId: 1, tier: 2, addresses: 3, score: 4, region: 5 } as const;
const ROUTE = {
  id: 1,
  egressPoolId: 2,
  serviceNodeId: 3,
  organizationId: 4,
  nextHopNodeId: 5,
  failoverNodeIds: 6,
  cost: 7,
} as const;
const ASSIGNED_WORKLOAD = { spec: 1, generation: 2 } as const;
const TIMESTAMP = { seconds: 1, nanos: 2 } as const;
const SIGNED_SNAPSHOT = { snapshot: 1, signature: 2, signatureAlgorithm: 3, signerChainPem: 4 } as const;

/** Protobuf wire types used here. */
const VARINT = 0;
const BIT64 = 1;
const LENGTH_DELIMITED = 2;

/**
 * A minimal protobuf writer over one reusable buffer: protobuf-es's BinaryWriter allocates a chunk per
 * field, which at tens of thousands of snapshots is most of the cost.
 */
class Writer {
  private buf = Buffer.allocUnsafe(64 * 1024);
  private pos = 0;

  begin(): this {
    this.pos = 0;
    return this;
  }

  /** A copy of what was written since begin(). */
  finish(): Uint8Array {
    return new Uint8Array(this.buf.subarray(0, this.pos));
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  private varint(value: number): void {
    this.ensure(5);
    while (value > 0x7f) {
      this.buf[this.pos++] = (value & 0x7f) | 0x80;
      value >>>= 7;
    }
    this.buf[this.pos++] = value;
  }

  tag(field: number, wireType: number): this {
    this.varint((field << 3) | wireType);
    return this;
  }

  uint32(field: number, value: number): this {
    this.tag(field, VARINT).varint(value);
    return this;
  }

  uint64(field: number, value: bigint): this {
    this.tag(field, VARINT);
    this.ensure(10);
    while (value > 0x7fn) {
      this.buf[this.pos++] = Number(value & 0x7fn) | 0x80;
      value >>= 7n;
    }
    this.buf[this.pos++] = Number(value);
    return this;
  }

  double(field: number, value: number): this {
    this.tag(field, BIT64).ensure(8);
    this.buf.writeDoubleLE(value, this.pos);
    this.pos += 8;
    return this;
  }

  string(field: number, value: string): this {
    const n = Buffer.byteLength(value);
    this.tag(field, LENGTH_DELIMITED).varint(n);
    this.ensure(n);
    this.buf.write(value, this.pos, "utf8");
    this.pos += n;
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.tag(field, LENGTH_DELIMITED).varint(value.length);
    this.raw(value);
    return this;
  }

  raw(value: Uint8Array): this {
    this.ensure(value.length);
    this.buf.set(value, this.pos);
    this.pos += value.length;
    return this;
  }

  /** A length-delimited field whose content `write` produces. */
  message(field: number, write: () => void): this {
    return this.tag(field, LENGTH_DELIMITED).delimited(write);
  }

  /** A length prefix and the content `write` produces (a field's value without its tag). */
  delimited(write: () => void): this {
    this.ensure(5);
    const lengthAt = this.pos;
    this.pos += 5; // room for the longest length prefix; moved down once the length is known
    write();
    const length = this.pos - lengthAt - 5;
    const prefix = varintSize(length);
    this.buf.copyWithin(lengthAt + prefix, lengthAt + 5, this.pos);
    this.pos = lengthAt;
    this.varint(length);
    this.pos += length;
    return this;
  }
}

function varintSize(value: number): number {
  let n = 1;
  while (value > 0x7f) {
    value >>>= 7;
    n++;
  }
  return n;
}

const snapshotWriter = new Writer();
const identityWriter = new Writer();
const envelopeWriter = new Writer();

/** A peer's fields that depend only on the peer: node id, addresses, region. */
export function encodePeerIdentity(nodeId: string, addresses: readonly string[], region: string): Uint8Array {
  const w = identityWriter.begin();
  w.string(PEER.nodeId, nodeId);
  for (const a of addresses) w.string(PEER.addresses, a);
  if (region) w.string(PEER.region, region);
  return w.finish();
}

export interface PeerEntry {
  /** encodePeerIdentity() of the peer. */
  identity: Uint8Array;
  tier: PeerTier;
  score: number;
}

export interface RouteEntry {
  id: string;
  destination: { kind: "egressPool" | "serviceNode"; id: string };
  organizationId: string;
  nextHopNodeId: string;
  failoverNodeIds: readonly string[];
  cost: number;
}

export interface SnapshotParts {
  nodeId: string;
  clusterId: string;
  roles: readonly string[];
  peers: readonly PeerEntry[];
  routes: readonly RouteEntry[];
  entryPolicy?: EntryPolicy;
  workloads: readonly WorkloadRecord[];
  resources: readonly ResourceReference[];
}

const specBytes = new WeakMap<WorkloadRecord, Uint8Array>();

/** The content of a Snapshot: every field but version and generated_at (see appendVersion). */
export function encodeSnapshotContent(p: SnapshotParts): Uint8Array {
  const w = snapshotWriter.begin();
  w.string(SNAPSHOT.nodeId, p.nodeId);
  w.string(SNAPSHOT.clusterId, p.clusterId);
  for (const role of p.roles) w.string(SNAPSHOT.roles, role);
  for (const peer of p.peers) {
    w.message(SNAPSHOT.peers, () => {
      w.raw(peer.identity);
      w.uint32(PEER.tier, peer.tier);
      w.double(PEER.score, peer.score);
    });
  }
  for (const r of p.routes) {
    w.message(SNAPSHOT.routes, () => {
      w.string(ROUTE.id, r.id);
      w.string(
        r.destination.kind === "egressPool" ? ROUTE.egressPoolId : ROUTE.serviceNodeId,
        r.destination.id,
      );
      if (r.organizationId) w.string(ROUTE.organizationId, r.organizationId);
      if (r.nextHopNodeId) w.string(ROUTE.nextHopNodeId, r.nextHopNodeId);
      for (const id of r.failoverNodeIds) w.string(ROUTE.failoverNodeIds, id);
      if (r.cost !== 0) w.double(ROUTE.cost, r.cost);
    });
  }
  if (p.entryPolicy) w.bytes(SNAPSHOT.entryPolicy, toBinary(EntryPolicySchema, p.entryPolicy));
  for (const workload of p.workloads) {
    let spec = specBytes.get(workload);
    if (!spec) {
      spec = workload.workload.spec ? toBinary(WorkloadSpecSchema, workload.workload.spec) : new Uint8Array();
      specBytes.set(workload, spec);
    }
    w.message(SNAPSHOT.workloads, () => {
      w.bytes(ASSIGNED_WORKLOAD.spec, spec);
      if (workload.workload.generation !== 0n)
        w.uint64(ASSIGNED_WORKLOAD.generation, workload.workload.generation);
    });
  }
  for (const r of p.resources) w.bytes(SNAPSHOT.resources, toBinary(ResourceReferenceSchema, r));
  return w.finish();
}

/**
 * The whole Snapshot: the content, then version and generated_at. Protobuf allows fields in any order,
 * so this is a valid encoding of the whole message, made without encoding the content twice (the
 * content alone is what change detection compares).
 */
export function appendVersion(content: Uint8Array, version: bigint, nowMs: number): Uint8Array {
  const w = snapshotWriter.begin();
  w.raw(content);
  w.uint64(SNAPSHOT.version, version);
  // google.protobuf.Timestamp, as timestampFromMs() makes it (generation times are after 1970).
  const seconds = Math.floor(nowMs / 1_000);
  const nanos = (nowMs - seconds * 1_000) * 1_000_000;
  w.message(SNAPSHOT.generatedAt, () => {
    if (seconds !== 0) w.uint64(TIMESTAMP.seconds, BigInt(seconds));
    if (nanos !== 0) w.uint32(TIMESTAMP.nanos, nanos);
  });
  return w.finish();
}

/** A signer's part of every SignedSnapshot (algorithm and certificate chain), encoded once per identity. */
export function encodeSignerFields(
  signatureAlgorithm: string,
  signerChainPem: readonly string[],
): Uint8Array {
  const w = envelopeWriter.begin();
  w.string(SIGNED_SNAPSHOT.signatureAlgorithm, signatureAlgorithm);
  for (const pem of signerChainPem) w.string(SIGNED_SNAPSHOT.signerChainPem, pem);
  return w.finish();
}

/**
 * A SignedSnapshot as the value of a length-delimited field (length prefix, then the message), from the
 * snapshot bytes, their signature and encodeSignerFields() of the signer.
 */
export function encodeSignedSnapshotValue(
  snapshot: Uint8Array,
  signature: Uint8Array,
  signerFields: Uint8Array,
): Uint8Array {
  const w = envelopeWriter.begin();
  w.delimited(() => {
    w.bytes(SIGNED_SNAPSHOT.snapshot, snapshot);
    w.bytes(SIGNED_SNAPSHOT.signature, signature);
    w.raw(signerFields);
  });
  return w.finish();
}
