import { MembershipState } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import { describe, expect, it } from "vitest";
import { EGRESS_POOL_RESOURCE } from "../src/snapshot-builder.js";
import { TIER_SIZES } from "../src/node-class.js";
import { engineOf, modelOf, snapshotOf, stringsIn } from "./fixtures/feed.js";
import { C1_ONLY, C2_ONLY, orgFabric } from "./fixtures/org-fabric.js";

const feed = orgFabric();
const engine = engineOf(feed.events);
const model = modelOf(feed.events);

describe("need-to-know snapshots", () => {
  it("core (relay): peers and routes, nothing else", () => {
    const s = snapshotOf(engine, "c1", "r-all");
    expect(s.roles).toEqual(["relay-node"]);
    expect(s.peers.length).toBeGreaterThan(0);
    expect(s.routes.length).toBeGreaterThan(0);
    expect(s.entryPolicy).toBeUndefined();
    expect(s.workloads).toEqual([]);
    expect(s.resources).toEqual([]);
  });

  it("a plain mesh node: peers only", () => {
    const s = snapshotOf(engine, "c1", "c1-n0");
    expect(s.roles).toEqual([]);
    expect(s.peers.length).toBeGreaterThan(0);
    expect(s.routes).toEqual([]);
    expect(s.entryPolicy).toBeUndefined();
    expect(s.workloads).toEqual([]);
    expect(s.resources).toEqual([]);
  });

  it("ingress (entry node): its entry policy and its organizations' routes, no workloads or resources", () => {
    const s = snapshotOf(engine, "c1", "entry-o2");
    expect(s.entryPolicy?.organizationIds).toEqual(["o2"]);
    expect(s.entryPolicy?.egressPoolIds).toEqual(["p-o2"]);
    expect(s.entryPolicy?.listenAddresses).toEqual(["entry-o2.mesh.test:7800"]);
    expect(s.routes.every((r) => r.organizationId === "o2")).toBe(true);
    expect(s.workloads).toEqual([]);
    expect(s.resources).toEqual([]);
  });

  it("egress: its workloads and the pools it backs for organizations it may carry, no peers or routes", () => {
    const s = snapshotOf(engine, "c1", "x2");
    expect(s.peers).toEqual([]);
    expect(s.routes).toEqual([]);
    expect(s.entryPolicy).toBeUndefined();
    expect(s.workloads.map((w) => w.spec?.id)).toEqual(["w-x2"]);
    expect(s.workloads[0]!.generation).toBe(1n);
    // x2 is in p-o1 too, but its assignment is for o2 only
    expect(s.resources.map((r) => [r.type, r.id, r.organizationId])).toEqual([
      [EGRESS_POOL_RESOURCE, "p-o2", "o2"],
    ]);
  });

  it("service node: exactly the workloads placed on it", () => {
    expect(snapshotOf(engine, "c1", "s1").workloads.map((w) => w.spec?.id)).toEqual(["w-o1"]);
    expect(snapshotOf(engine, "c1", "s2").workloads.map((w) => w.spec?.id)).toEqual(["w-o2"]);
    const s = snapshotOf(engine, "c1", "s1");
    expect(s.peers).toEqual([]);
    expect(s.routes).toEqual([]);
    expect(s.resources).toEqual([]);
  });

  it("no node ever sees another cluster's nodes, pools or workloads", () => {
    for (const [cluster, foreign] of [
      ["c1", C2_ONLY],
      ["c2", C1_ONLY],
    ] as const) {
      for (const node of model.cluster(cluster).members.keys()) {
        const names = stringsIn(snapshotOf(engine, cluster, node));
        for (const id of foreign) expect(names.has(id), `${cluster}/${node} names ${id}`).toBe(false);
      }
    }
    // the node in both clusters gets two separate snapshots, each of its own cluster
    expect(snapshotOf(engine, "c1", "x-both").resources.map((r) => r.id)).toEqual(["p-o1"]);
    expect(snapshotOf(engine, "c2", "x-both").resources.map((r) => r.id)).toEqual(["c2-pool"]);
  });

  it("no node gets the full topology", () => {
    const size = model.cluster("c1").members.size;
    for (const node of model.cluster("c1").members.keys()) {
      const s = snapshotOf(engine, "c1", node);
      expect(s.peers.length, node).toBeLessThan(size / 2);
    }
    const relay = snapshotOf(engine, "c1", "r-all");
    const tiers = TIER_SIZES.relay;
    const contacts = new Set(relay.routes.flatMap((r) => [r.nextHopNodeId, ...r.failoverNodeIds]));
    expect(relay.peers.length).toBeLessThanOrEqual(tiers.activeMax + tiers.warm + tiers.cold + contacts.size);
  });

  it("a disabled membership gets an empty snapshot with a newer version", () => {
    const f = orgFabric();
    const live = engineOf(f.events);
    const before = live.current("c1", "x2")!.version;
    live.apply(f.membership("x2", "c1", MembershipState.DISABLED));
    live.flush();
    const s = snapshotOf(live, "c1", "x2");
    expect(s.version).toBeGreaterThan(before);
    expect(s.roles).toEqual([]);
    expect(s.workloads).toEqual([]);
    expect(s.resources).toEqual([]);
    expect(s.peers).toEqual([]);
    // and nobody routes through it any more
    for (const node of ["r-all", "entry-o2", "entry-all"]) {
      const routes = snapshotOf(live, "c1", node).routes;
      expect(
        routes.flatMap((r) => [r.nextHopNodeId, ...r.failoverNodeIds]),
        node,
      ).not.toContain("x2");
    }
  });
});
