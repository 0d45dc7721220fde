import { MembershipState } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import { PeerTier, type Snapshot } from "@fabric/proto/fabric/router/v1/router_pb.js";
import { describe, expect, it } from "vitest";
import { compareIds } from "../src/fabric-model.js";
import { TIER_SIZES } from "../src/node-class.js";
import type { SnapshotEngine } from "../src/snapshot-engine.js";
import { Feed, NOW, engineOf, modelOf, snapshotOf } from "./fixtures/feed.js";

const REGIONS = ["eu-central", "eu-west", "us-east"];

/** A cluster of 60 normal nodes, 24 relays and two thin nodes (one labelled, one without an address). */
function meshFeed(): Feed {
  const feed = new Feed();
  for (let i = 0; i < 60; i++) {
    feed.member(`n${String(i).padStart(2, "0")}`, "c1", { region: REGIONS[i % 3]!, load: (i % 10) / 10 });
  }
  for (let i = 0; i < 24; i++) {
    const id = `r${String(i).padStart(2, "0")}`;
    feed.member(id, "c1", { region: REGIONS[i % 3]!, load: 0.3 });
    feed.role(id, "c1", "relay-node");
  }
  feed.member("thin-labelled", "c1", { thin: true });
  feed.member("thin-dialer", "c1", { addresses: [] });
  // some measured pairs
  feed.probe("c1", "n00", "n01", 5);
  feed.probe("c1", "n00", "n02", 250, 0.1, 3);
  feed.probe("c1", "n01", "r00", 12);
  return feed;
}

const tiers = (s: Snapshot, tier: PeerTier) => s.peers.filter((p) => p.tier === tier).length;

function expectTierSizes(s: Snapshot, sizes: (typeof TIER_SIZES)["normal"]) {
  expect(tiers(s, PeerTier.ACTIVE)).toBeGreaterThanOrEqual(sizes.activeMin);
  expect(tiers(s, PeerTier.ACTIVE)).toBeLessThanOrEqual(sizes.activeMax);
  expect(tiers(s, PeerTier.WARM)).toBe(sizes.warm);
  expect(tiers(s, PeerTier.COLD)).toBe(sizes.cold);
}

/** The content part of every snapshot (version and generation time excluded), by key. */
function contents(engine: SnapshotEngine, keys: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const key of keys) {
    const [cluster, node] = key.split("/") as [string, string];
    const p = engine.current(cluster, node);
    out.set(key, p ? Buffer.from(p.bytes.subarray(0, p.contentLength)).toString("hex") : "none");
  }
  return out;
}

describe("peer selection", () => {
  it("gives normal, relay and thin nodes their tier sizes", () => {
    const engine = engineOf(meshFeed().events);
    for (let i = 0; i < 60; i++) {
      expectTierSizes(snapshotOf(engine, "c1", `n${String(i).padStart(2, "0")}`), TIER_SIZES.normal);
    }
    for (let i = 0; i < 24; i++) {
      expectTierSizes(snapshotOf(engine, "c1", `r${String(i).padStart(2, "0")}`), TIER_SIZES.relay);
    }
    for (const id of ["thin-labelled", "thin-dialer"]) {
      expectTierSizes(snapshotOf(engine, "c1", id), TIER_SIZES.thin);
    }
  });

  it("never picks itself, thin nodes, or nodes that are offline, disabled or revoked", () => {
    const feed = meshFeed();
    feed.node("n10", { online: false });
    feed.membership("n11", "c1", MembershipState.DISABLED);
    feed.node("n12", { revoked: true });
    const engine = engineOf(feed.events);
    const excluded = new Set(["thin-labelled", "thin-dialer", "n10", "n11", "n12"]);
    for (const key of ["n00", "n13", "r00", "thin-labelled"]) {
      const s = snapshotOf(engine, "c1", key);
      const ids = s.peers.map((p) => p.nodeId);
      expect(ids).not.toContain(key);
      for (const id of ids) expect(excluded.has(id), `${key} got ${id}`).toBe(false);
      expect(new Set(ids).size).toBe(ids.length);
    }
  });

  it("is deterministic: the same inputs in any order give byte-identical snapshots", () => {
    const feed = meshFeed();
    const a = engineOf(feed.events);
    // Same entities, listed in reverse (each entity appears once, so order cannot change the state).
    const b = engineOf([...feed.events].reverse(), {});
    const keys = [...modelOf(feed.events).cluster("c1").members.keys()].map((n) => `c1/${n}`);
    for (const key of keys) {
      const [cluster, node] = key.split("/") as [string, string];
      expect(
        Buffer.from(b.current(cluster, node)!.bytes).equals(Buffer.from(a.current(cluster, node)!.bytes)),
      ).toBe(true);
    }
  });

  it("ranks by total score with ties broken by node id, and scores measured pairs by their probes", () => {
    const engine = engineOf(meshFeed().events);
    const peers = engine.clusterPeers("c1");
    const ranked = peers.consider("n00", "normal");
    for (let i = 1; i < ranked.length; i++) {
      const [a, b] = [ranked[i - 1]!, ranked[i]!];
      expect(a.total > b.total || (a.total === b.total && compareIds(a.info.id, b.info.id) < 0)).toBe(true);
    }
    const scored = (id: string) => peers.score("n00", "normal", peers.candidates.get(id)!);
    const near = scored("n01");
    const far = scored("n02");
    expect(ranked.find((c) => c.info.id === "n01")!.total).toBe(near.total);
    expect(near.factors.latency).toBeGreaterThan(0.9);
    expect(far.factors.latency).toBeLessThan(0.2);
    expect(far.factors.loss).toBeLessThan(0.6);
    expect(far.factors.recentFailures).toBe(0.25);
    expect(near.total).toBeGreaterThan(far.total);
    // the reverse direction counts when the selector has not probed the candidate itself
    const reverse = peers.score("r00", "relay", peers.candidates.get("n01")!);
    expect(reverse.factors.latency).toBeGreaterThan(0.8);
  });

  it("prefers relays for normal and thin nodes, and same-region candidates", () => {
    const engine = engineOf(meshFeed().events);
    for (const id of ["n03", "thin-labelled"]) {
      const active = snapshotOf(engine, "c1", id).peers.filter((p) => p.tier === PeerTier.ACTIVE);
      expect(active.filter((p) => p.nodeId.startsWith("r")).length, id).toBeGreaterThan(active.length / 2);
    }
    const n03 = snapshotOf(engine, "c1", "n03"); // eu-central
    const active = n03.peers.filter((p) => p.tier === PeerTier.ACTIVE);
    expect(active.every((p) => p.region === "eu-central")).toBe(true);
  });

  it("spreads nodes of one group over different peers instead of all choosing the same ones", () => {
    const engine = engineOf(meshFeed().events);
    const chosen = new Set<string>();
    for (let i = 0; i < 60; i += 3) {
      const s = snapshotOf(engine, "c1", `n${String(i).padStart(2, "0")}`);
      for (const p of s.peers) if (p.tier === PeerTier.ACTIVE) chosen.add(p.nodeId);
    }
    expect(chosen.size).toBeGreaterThan(TIER_SIZES.normal.activeMax);
  });

  it("recomputes incrementally to exactly what a full recompute gives", () => {
    const feed = meshFeed();
    const engine = engineOf(feed.events);
    const keys = [...modelOf(feed.events).cluster("c1").members.keys()].map((n) => `c1/${n}`);
    let seed = 7;
    const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    const pick = (prefix: string, n: number) =>
      `${prefix}${String(Math.floor(random() * n)).padStart(2, "0")}`;
    const steps: (() => void)[] = [
      () => void feed.node(pick("n", 60), { region: REGIONS[Math.floor(random() * 3)]!, load: random() }),
      () => void feed.node(pick("r", 24), { load: random(), online: random() > 0.3 }),
      () => void feed.node(pick("n", 60), { online: random() > 0.5 }),
      () => void feed.probe("c1", pick("n", 60), pick("r", 24), 1 + random() * 200, random() / 10),
      () => void feed.role(pick("n", 60), "c1", "relay-node"),
      () => void feed.removeRole(pick("r", 24), "c1", "relay-node"),
      () =>
        void feed.membership(
          pick("n", 60),
          "c1",
          random() > 0.5 ? MembershipState.DISABLED : MembershipState.ACTIVE,
        ),
    ];
    let rebuilt = 0;
    for (let round = 0; round < 40; round++) {
      const from = feed.events.length;
      const changes = 1 + Math.floor(random() * 3);
      for (let i = 0; i < changes; i++) steps[Math.floor(random() * steps.length)]!();
      for (const e of feed.events.slice(from)) engine.apply(e);
      rebuilt += engine.flush().rebuilt;
      const fresh = engineOf(feed.events);
      expect(contents(engine, keys), `round ${round}`).toEqual(contents(fresh, keys));
    }
    // incremental work stays well below recomputing all 86 nodes 40 times
    expect(rebuilt).toBeLessThan(86 * 40 * 0.5);
  });

  it("uses whole days of membership age for trust, so the clock inside a day does not matter", () => {
    const feed = meshFeed();
    const early = engineOf(feed.events, { now: () => NOW + 1_000 });
    const late = engineOf(feed.events, { now: () => NOW + 3_600_000 });
    const a = early.current("c1", "n05")!;
    const b = late.current("c1", "n05")!;
    expect(
      Buffer.from(a.bytes.subarray(0, a.contentLength)).equals(
        Buffer.from(b.bytes.subarray(0, b.contentLength)),
      ),
    ).toBe(true);
  });
});
