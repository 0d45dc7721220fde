import { fromBinary } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { FabricError } from "@fabric/platform";
import { MembershipState } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import { SnapshotSchema, type WatchResponse } from "@fabric/proto/fabric/router/v1/router_pb.js";
import { describe, expect, it } from "vitest";
import { SnapshotHub } from "../src/snapshot-hub.js";
import type { PublishedSnapshot } from "../src/snapshot-signer.js";
import { Feed, engineOf, modelOf, snapshotOf } from "./fixtures/feed.js";
import { routerRig } from "./fixtures/router-rig.js";

function smallFabric(): Feed {
  const f = new Feed();
  for (let i = 0; i < 8; i++) f.member(`n${i}`, "c1");
  f.member("r1", "c1");
  f.role("r1", "c1", "relay-node");
  f.member("s1", "c1");
  f.role("s1", "c1", "rdp-worker");
  f.member("other", "c2");
  return f;
}

const versionOf = (res: IteratorResult<WatchResponse>) =>
  fromBinary(SnapshotSchema, res.value!.signedSnapshot!.snapshot).version;

const published = (version: number): PublishedSnapshot => ({
  nodeId: "n",
  clusterId: "c",
  version: BigInt(version),
  bytes: new Uint8Array(),
  contentLength: 0,
});

describe("one pending slot per stream", () => {
  it("hands a slow consumer only the latest of many versions", async () => {
    const hub = new SnapshotHub();
    const sub = hub.subscribe("c/n");
    for (let v = 1; v <= 50; v++) hub.deliver("c/n", published(v));
    const signal = new AbortController().signal;
    expect(await sub.next(signal)).toMatchObject({ version: 50n });
    // nothing else is queued: the next call waits for a new delivery
    const pending = sub.next(signal);
    hub.deliver("c/n", published(51));
    expect(await pending).toMatchObject({ version: 51n });
    sub.close();
    expect(hub.streams).toBe(0);
  });

  it("ends a waiting consumer when its stream is cancelled", async () => {
    const hub = new SnapshotHub();
    const sub = hub.subscribe("c/n");
    const abort = new AbortController();
    const waiting = sub.next(abort.signal);
    abort.abort();
    expect(await waiting).toBeUndefined();
  });
});

describe("versions and recompute", () => {
  it("versions are the feed version a snapshot was computed at, and unchanged content keeps its version", () => {
    const f = smallFabric();
    const engine = engineOf(f.events);
    const start = f.version;
    expect(engine.current("c1", "s1")!.version).toBe(start);
    f.workload("w1", "c1", "rdp-worker");
    f.member("late", "c2"); // an unrelated change in another cluster
    for (const e of f.events.slice(-3)) engine.apply(e);
    engine.flush();
    expect(engine.current("c1", "s1")!.version).toBe(f.version);
    expect(snapshotOf(engine, "c1", "s1").workloads.map((w) => w.spec?.id)).toEqual(["w1"]);
    // nodes the workload does not concern keep their version
    expect(engine.current("c1", "n0")!.version).toBe(start);
  });

  it("recomputes only the nodes a change affects", () => {
    const f = smallFabric();
    const engine = engineOf(f.events);
    engine.apply(f.workload("w1", "c1", "rdp-worker"));
    const stats = engine.flush();
    // the service node, plus the relay that routes to it
    expect(stats.rebuilt).toBeLessThanOrEqual(2);
    expect(stats.published).toBe(2);
  });

  it("debounces: changes are collected for the window, then published together", async () => {
    const f = smallFabric();
    const versions: bigint[] = [];
    const engine = engineOf(f.events, {
      debounceMs: 30,
      onPublish: (key, p) => key === "c1/s1" && versions.push(p.version),
    });
    versions.length = 0; // the initial load's
    const applied = Date.now();
    engine.apply(f.workload("w1", "c1", "rdp-worker"));
    engine.apply(f.workload("w2", "c1", "rdp-worker"));
    expect(versions).toEqual([]);
    await new Promise((r) => setTimeout(r, 60));
    expect(versions).toEqual([f.version]);
    expect(Date.now() - applied).toBeGreaterThanOrEqual(25);
    expect(snapshotOf(engine, "c1", "s1").workloads).toHaveLength(2);
  });

  it("never goes backwards when the model is relisted", () => {
    const f = smallFabric();
    const engine = engineOf(f.events);
    const before = engine.current("c1", "s1")!.version;
    // the registry relists at a later version with nothing changed: nothing is republished
    expect(engine.load(modelOf(f.events, f.version + 5n)).published).toBe(0);
    expect(engine.current("c1", "s1")!.version).toBe(before);
    // a relist that carries a change: the changed snapshot moves to the list's version
    f.workload("w1", "c1", "rdp-worker");
    engine.load(modelOf(f.events, f.version + 10n));
    expect(engine.current("c1", "s1")!.version).toBe(f.version + 10n);
    expect(engine.current("c1", "n0")!.version).toBe(before);
  });
});

describe("Watch", () => {
  it("sends the snapshot first, then each new version", async () => {
    const f = smallFabric();
    const rig = await routerRig(f.events);
    const { stream, close } = rig.watch({ id: "s1", cluster: "c1" });
    const first = await stream.next();
    expect(versionOf(first)).toBe(f.version);
    rig.engine.apply(f.workload("w1", "c1", "rdp-worker"));
    rig.engine.flush();
    const second = await stream.next();
    expect(versionOf(second)).toBe(f.version);
    expect(fromBinary(SnapshotSchema, second.value!.signedSnapshot!.snapshot).workloads).toHaveLength(1);
    close();
    expect((await stream.next()).done).toBe(true);
    expect(rig.hub.streams).toBe(0);
  });

  it("skips the current snapshot when the agent already has it", async () => {
    const f = smallFabric();
    const rig = await routerRig(f.events);
    const { stream, close } = rig.watch({ id: "s1", cluster: "c1" }, { knownVersion: f.version });
    const next = stream.next();
    rig.engine.apply(f.workload("w1", "c1", "rdp-worker"));
    rig.engine.flush();
    expect(versionOf(await next)).toBe(f.version);
    close();
  });

  it("gives a slow agent the latest version, signing only what it delivers", async () => {
    const f = smallFabric();
    const rig = await routerRig(f.events);
    const { stream, close } = rig.watch({ id: "s1", cluster: "c1" });
    await stream.next();
    const signedBefore = rig.signer.signatures;
    for (let i = 0; i < 10; i++) {
      rig.engine.apply(f.workload(`w${i}`, "c1", "rdp-worker"));
      rig.engine.flush();
    }
    const latest = await stream.next();
    expect(versionOf(latest)).toBe(f.version);
    expect(fromBinary(SnapshotSchema, latest.value!.signedSnapshot!.snapshot).workloads).toHaveLength(10);
    expect(rig.signer.signatures - signedBefore).toBe(1);
    close();
  });

  it("signs once per version and shares the envelope among a node's streams", async () => {
    const f = smallFabric();
    const rig = await routerRig(f.events);
    const a = rig.watch({ id: "n1", cluster: "c1" });
    const b = rig.watch({ id: "n1", cluster: "c1" });
    const signed = rig.signer.signatures;
    const [ra, rb] = [await a.stream.next(), await b.stream.next()];
    // ECDSA signatures are randomized: equal bytes mean one signature made once and shared
    expect(ra.value!.signedSnapshot!.signature).toEqual(rb.value!.signedSnapshot!.signature);
    expect(rig.signer.signatures - signed).toBe(1);
    a.close();
    b.close();
  });

  it("refuses another node's snapshot, records the refusal, and leaves nothing open", async () => {
    const rig = await routerRig(smallFabric().events);
    const { stream } = rig.watch({ id: "n1", cluster: "c1" }, { nodeId: "n2" });
    const err = await stream.next().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(FabricError);
    expect((err as FabricError).kind).toBe("permission-denied");
    expect((err as FabricError).message).toMatch(/only its own snapshot/);
    expect(rig.refusals).toMatchObject([
      { actorId: "n1", action: "snapshot.watch", targetId: "n2", outcome: "refused" },
    ]);
    expect(rig.hub.streams).toBe(0);
  });

  it("ends the stream when the node's membership disappears", async () => {
    const f = smallFabric();
    const rig = await routerRig(f.events);
    const { stream } = rig.watch({ id: "n3", cluster: "c1" });
    await stream.next();
    rig.engine.apply(
      (() => {
        const e = f.membership("n3", "c1", MembershipState.ACTIVE);
        e.deleted = true;
        return e;
      })(),
    );
    rig.engine.flush();
    const err = await stream.next().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as FabricError).kind).toBe("failed-precondition");
    expect(ConnectError.from(err).rawMessage).toBeDefined();
  });
});
