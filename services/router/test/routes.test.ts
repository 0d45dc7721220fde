import { MembershipState } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import type { Route, Snapshot } from "@fabric/proto/fabric/router/v1/router_pb.js";
import { describe, expect, it } from "vitest";
import { modelOf, engineOf, snapshotOf, stringsIn } from "./fixtures/feed.js";
import { C1_ONLY, C2_ONLY, orgFabric } from "./fixtures/org-fabric.js";

const feed = orgFabric();
const engine = engineOf(feed.events);
const model = modelOf(feed.events);
const members = (cluster: string) => new Set(model.cluster(cluster).members.keys());

const byId = (s: Snapshot) => new Map(s.routes.map((r) => [r.id, r]));
const hops = (r: Route) => [r.nextHopNodeId, ...r.failoverNodeIds].filter(Boolean);

describe("routes", () => {
  it("route an unscoped relay to every pool and workload of its cluster, per organization", () => {
    const routes = byId(snapshotOf(engine, "c1", "r-all"));
    expect([...routes.keys()].sort()).toEqual([
      "egress/p-o1/o1",
      "egress/p-o2/o2",
      "egress/p-platform",
      "service/w-o1",
      "service/w-o2",
      "service/w-x2",
    ]);
    const o1 = routes.get("egress/p-o1/o1")!;
    expect(o1.destination).toEqual({ case: "egressPoolId", value: "p-o1" });
    expect(o1.organizationId).toBe("o1");
    // heavier weight first: x1 (100) before x-both (50); x2 may not carry o1 traffic
    expect(o1.nextHopNodeId).toBe("x1");
    expect(o1.failoverNodeIds[0]).toBe("x-both");
    expect(hops(o1)).not.toContain("x2");
    expect(o1.cost).toBeGreaterThan(0);
    expect(o1.cost).toBeLessThan(1);
    expect(hops(routes.get("egress/p-o2/o2")!)).not.toContain("x3");
    expect(routes.get("egress/p-o2/o2")!.nextHopNodeId).toBe("x2");
    expect(routes.get("service/w-o1")!.destination).toEqual({ case: "serviceNodeId", value: "s1" });
    expect(routes.get("service/w-o2")!.destination).toEqual({ case: "serviceNodeId", value: "s2" });
  });

  it("never route an organization's traffic through nodes whose assignment excludes it", () => {
    for (const node of members("c1")) {
      for (const r of snapshotOf(engine, "c1", node).routes) {
        for (const hop of hops(r)) {
          const cluster = model.cluster("c1");
          const role =
            cluster.holds(hop, "relay-node") && !cluster.holds(hop, "egress-node") ? "relay-node" : undefined;
          if (role)
            expect(cluster.allows(hop, role, r.organizationId), `${node} ${r.id} via ${hop}`).toBe(true);
          if (r.destination.case === "egressPoolId" && cluster.holds(hop, "egress-node")) {
            expect(cluster.allows(hop, "egress-node", r.organizationId), `${node} ${r.id} via ${hop}`).toBe(
              true,
            );
          }
        }
        if (r.organizationId === "o2") expect(hops(r), `${node} ${r.id}`).not.toContain("r-o1");
      }
    }
  });

  it("give scoped holders only their organizations' routes", () => {
    expect([...byId(snapshotOf(engine, "c1", "r-o1")).keys()].sort()).toEqual([
      "egress/p-o1/o1",
      "service/w-o1",
    ]);
    expect([...byId(snapshotOf(engine, "c1", "entry-o2")).keys()].sort()).toEqual([
      "egress/p-o2/o2",
      "service/w-o2",
      "service/w-x2",
    ]);
    // an unscoped entry node serves every organization, but carries no platform traffic
    expect([...byId(snapshotOf(engine, "c1", "entry-all")).keys()].sort()).toEqual([
      "egress/p-o1/o1",
      "egress/p-o2/o2",
      "service/w-o1",
      "service/w-o2",
      "service/w-x2",
    ]);
  });

  it("never cross the cluster boundary, even through a node that is a member of both", () => {
    const c1 = members("c1");
    for (const node of c1) {
      const s = snapshotOf(engine, "c1", node);
      for (const r of s.routes) for (const hop of hops(r)) expect(c1.has(hop), `${node}: ${hop}`).toBe(true);
      for (const p of s.peers) expect(c1.has(p.nodeId), `${node}: ${p.nodeId}`).toBe(true);
    }
    const c2 = members("c2");
    const relay = snapshotOf(engine, "c2", "c2-relay");
    expect(relay.routes.map((r) => r.id).sort()).toEqual(["egress/c2-pool/o1", "service/c2-w"]);
    for (const r of relay.routes) for (const hop of hops(r)) expect(c2.has(hop)).toBe(true);
    const c2Names = stringsIn(relay);
    for (const id of C1_ONLY) expect(c2Names.has(id), id).toBe(false);
    const c1Names = stringsIn(snapshotOf(engine, "c1", "r-all"));
    for (const id of C2_ONLY) expect(c1Names.has(id), id).toBe(false);
  });

  it("list every hop among the holder's peers, so it has their addresses", () => {
    const s = snapshotOf(engine, "c1", "entry-o2");
    const known = new Map(s.peers.map((p) => [p.nodeId, p]));
    for (const r of s.routes) {
      for (const hop of hops(r)) {
        expect(known.has(hop), `${r.id} via ${hop}`).toBe(true);
        expect(known.get(hop)!.addresses.length).toBeGreaterThan(0);
      }
    }
  });

  it("drop an exit that goes offline and fail over to the next", () => {
    const f = orgFabric();
    const live = engineOf(f.events);
    const event = f.node("x1", { online: false });
    live.apply(event);
    live.flush();
    const o1 = byId(snapshotOf(live, "c1", "r-all")).get("egress/p-o1/o1")!;
    expect(o1.nextHopNodeId).toBe("x-both");
    expect(hops(o1)).not.toContain("x1");
    expect(byId(snapshotOf(live, "c1", "r-all")).has("egress/p-platform")).toBe(false);
  });

  it("follow a relay's organization scope in other holders' failovers", () => {
    const f = orgFabric();
    const live = engineOf(f.events);
    const usesRelay = (org: string) =>
      snapshotOf(live, "c1", "entry-all")
        .routes.filter((r) => r.organizationId === org)
        .some((r) => r.failoverNodeIds.includes("r-o1"));
    expect(usesRelay("o1")).toBe(true);
    expect(usesRelay("o2")).toBe(false);
    live.apply(f.removeRole("r-o1", "c1", "relay-node", "o1"));
    live.apply(f.role("r-o1", "c1", "relay-node", "o2"));
    live.flush();
    expect(usesRelay("o1")).toBe(false);
    expect(usesRelay("o2")).toBe(true);
  });

  it("stay exactly what a full recompute gives as pools, scopes, placements and nodes change", () => {
    const f = orgFabric();
    const live = engineOf(f.events);
    const keys = (m: ReturnType<typeof modelOf>) =>
      [...m.clusters.values()].flatMap((c) => [...c.members.keys()].map((n) => [c.id, n] as const));
    let seed = 11;
    const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    const one = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;
    const exits = ["x1", "x2", "x3", "x-both"];
    const orgs = ["", "o1", "o2"];
    const steps: (() => void)[] = [
      () =>
        void f.node(one([...exits, "s1", "s2", "r-all", "r-o1"]), { online: random() > 0.3, load: random() }),
      () => void f.node(one(["r-all", "r-o1", "entry-o2", "x1"]), { region: one(["eu-central", "us-east"]) }),
      () => void f.role(one([...exits, "s1", "s2"]), "c1", one(["egress-node", "rdp-worker"]), one(orgs)),
      () => void f.removeRole(one(exits), "c1", "egress-node", one(orgs)),
      () => void f.role(one(["r-o1", "c1-n3", "c1-n4"]), "c1", "relay-node", one(orgs)),
      () => {
        f.removeRole("r-o1", "c1", "relay-node", one(orgs));
        f.role("r-o1", "c1", "relay-node", one(orgs));
      },
      () => void f.pool("p-o1", "c1", one([["o1"], ["o1", "o2"], []]), [[one(exits)], [one(exits), 50]]),
      () =>
        void f.workload("w-o2", "c1", "rdp-worker", {
          organizationId: one(orgs),
          nodeIds: random() > 0.5 ? [] : ["s2"],
        }),
      () =>
        void f.membership(
          one([...exits, "s1", "r-all"]),
          "c1",
          one([MembershipState.ACTIVE, MembershipState.DISABLED]),
        ),
      () => void f.probe("c1", one(["r-all", "entry-o2", "entry-all"]), one(exits), 1 + random() * 100),
    ];
    for (let round = 0; round < 40; round++) {
      const from = f.events.length;
      for (let i = 0; i < 1 + Math.floor(random() * 3); i++) one(steps)();
      for (const e of f.events.slice(from)) live.apply(e);
      live.flush();
      const fresh = engineOf(f.events);
      for (const [cluster, node] of keys(modelOf(f.events))) {
        const a = live.current(cluster, node)!;
        const b = fresh.current(cluster, node)!;
        expect(
          Buffer.from(a.bytes.subarray(0, a.contentLength)).equals(
            Buffer.from(b.bytes.subarray(0, b.contentLength)),
          ),
          `round ${round}: ${cluster}/${node}`,
        ).toBe(true);
      }
    }
  });
});
