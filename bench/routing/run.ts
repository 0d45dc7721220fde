// Peer selection and routes at scale, in-process against the router's own modules (no network): a
// cluster of BENCH_NODES nodes (default 10,000) in six regions — 2% relays, 1% entry nodes, 0.5% egress
// nodes in six pools, 1% service nodes running ten workloads, 5% thin, 2% offline, the rest plain mesh
// members — with three probed peers per node and five organizations, fed to the model as the registry's
// change events.
// 1. Everything: peer selection and routes for every node (ClusterPeers, RouteTable, computeRoutes), and
//    the engine's whole load (the same plus every node's encoded snapshot), median of BENCH_REPEATS.
//    Goal ≤ 1 s. Baseline measured in the same run: building the model itself from the same events.
// 2. One changed node: one registry change (a plain node's or a relay's load, a node going offline or
//    coming back, a probe figure, a node joining), applied to the loaded engine and flushed: only the
//    affected snapshots are rebuilt. p50/p99 over BENCH_CHANGES changes, and the worst per kind. Goal
//    ≤ 10 ms. Baseline: sorting the cluster's candidates by score once (what re-ranking anything costs).
//
//   npm run bench:routing -w @fabric/bench      BENCH_QUICK=1 for the CI smoke
//   knobs: BENCH_NODES (default 10000), BENCH_REPEATS (default 5; quick 2), BENCH_CHANGES (default 300;
//          quick 60)
import { performance } from "node:perf_hooks";
import { compareIds, type FabricModel } from "../../services/router/src/fabric-model.js";
import { slicesFor } from "../../services/router/src/node-class.js";
import { ClusterPeers } from "../../services/router/src/peer-selection.js";
import { RouteTable, computeRoutes } from "../../services/router/src/routes.js";
import { SnapshotEngine } from "../../services/router/src/snapshot-engine.js";
import { Feed, NOW, modelOf } from "../../services/router/test/fixtures/feed.js";
import { count, line, ms, quick, summarize } from "../lib/stats.js";

const NODES = Number(process.env.BENCH_NODES ?? 10_000);
const REPEATS = Number(process.env.BENCH_REPEATS ?? (quick ? 2 : 5));
const CHANGES = Number(process.env.BENCH_CHANGES ?? (quick ? 60 : 300));
const CLUSTER = "c1";
const REGIONS = ["eu-central", "eu-west", "us-east", "us-west", "ap-south", "ap-east"];
const ORGS = ["o1", "o2", "o3", "o4", "o5"];
const PROBES_PER_NODE = 3;

/** A small deterministic generator (an LCG), so every run measures the same fabric and changes. */
function lcg(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
}

interface Fabric {
  feed: Feed;
  plain: string[];
  relays: string[];
  all: string[];
}

function buildFabric(n: number): Fabric {
  const random = lcg(42);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;
  const feed = new Feed();
  const fabric: Fabric = { feed, plain: [], relays: [], all: [] };
  const ids = Array.from({ length: n }, (_, i) => `n${String(i).padStart(5, "0")}`);
  const share = (p: number) => Math.max(1, Math.round(n * p));
  const relays = share(0.02);
  const entries = share(0.01);
  const egress = share(0.005);
  const services = share(0.01);
  const thin = share(0.05);
  const offline = share(0.02);
  let i = 0;
  const take = (k: number) => ids.slice(i, (i += k));
  for (const id of ids) {
    feed.member(id, CLUSTER, { region: pick(REGIONS), load: Math.round(random() * 10) / 10 });
  }
  for (const id of take(relays)) {
    // most relays carry everything; one in five only one organization's traffic
    feed.role(id, CLUSTER, "relay-node", random() < 0.2 ? pick(ORGS) : "");
    fabric.relays.push(id);
  }
  for (const id of take(entries)) feed.role(id, CLUSTER, "entry-node", random() < 0.5 ? pick(ORGS) : "");
  const exits = take(egress);
  for (const id of exits) feed.role(id, CLUSTER, "egress-node", random() < 0.5 ? pick(ORGS) : "");
  for (const [p, org] of [...ORGS, ""].entries()) {
    const members = exits
      .filter((_, k) => k % 6 === p)
      .map((id): [string, number] => [id, 50 + (p % 2) * 50]);
    feed.pool(`pool-${org || "platform"}`, CLUSTER, org ? [org] : [], members);
  }
  for (const id of take(services)) feed.role(id, CLUSTER, "svc-worker", pick(ORGS));
  for (let w = 0; w < 10; w++)
    feed.workload(`w${w}`, CLUSTER, "svc-worker", { organizationId: ORGS[w % 5]! });
  for (const id of take(thin)) feed.node(id, { region: pick(REGIONS), thin: true });
  for (const id of take(offline)) feed.node(id, { region: pick(REGIONS), online: false });
  fabric.plain = ids.slice(i);
  fabric.all = ids;
  for (const from of ids) {
    for (let p = 0; p < PROBES_PER_NODE; p++) {
      const to = pick(ids);
      if (to !== from) feed.probe(CLUSTER, from, to, 1 + random() * 120);
    }
  }
  return fabric;
}

/** Peer selection for every member and routes for every route holder, as the snapshots use them. */
function selectAndRoute(model: FabricModel): number {
  const cluster = model.cluster(CLUSTER);
  const peers = new ClusterPeers(model, cluster);
  peers.rebuild(NOW);
  const table = new RouteTable(peers);
  table.rebuild();
  let routes = 0;
  for (const id of [...cluster.members.keys()].sort(compareIds)) {
    const slices = slicesFor(cluster.rolesOf(id));
    if (!slices.peers) continue;
    const selection = peers.select(id);
    if (slices.routes) routes += computeRoutes(table, peers, id, selection).routes.length;
  }
  return routes;
}

/** Baseline: one sort of every candidate by score, with the same tie-break as the rankings. */
function sortCandidates(model: FabricModel): number {
  const random = lcg(7);
  const entries = [...model.cluster(CLUSTER).members.keys()].map((id) => ({ id, score: random() }));
  const t0 = performance.now();
  entries.sort((a, b) => b.score - a.score || compareIds(a.id, b.id));
  return performance.now() - t0;
}

function median(xs: number[]): number {
  return summarize(xs).p50;
}

function timed<T>(fn: () => T): [T, number] {
  const t0 = performance.now();
  const out = fn();
  return [out, performance.now() - t0];
}

const t0 = performance.now();
const fabric = buildFabric(NODES);
const events = fabric.feed.events;
console.log(
  `routing bench${quick ? " (quick)" : ""}: ${count(NODES)} nodes (${count(fabric.relays.length)} relays), ${count(events.length)} change events, ${REPEATS} repeats`,
);

// 1. Everything, from a fresh model each time.
const modelMs: number[] = [];
const selectMs: number[] = [];
const loadMs: number[] = [];
let routeCount = 0;
let snapshots = 0;
for (let r = 0; r < REPEATS; r++) {
  modelMs.push(timed(() => modelOf(events))[1]);
  const [routes, selecting] = timed(() => selectAndRoute(modelOf(events)));
  routeCount = routes;
  selectMs.push(selecting);
  const model = modelOf(events);
  const engine = new SnapshotEngine({ debounceMs: 0, now: () => NOW });
  const [stats, loading] = timed(() => engine.load(model));
  snapshots = stats.published;
  loadMs.push(loading);
}
const model = median(modelMs);
console.log(
  line(
    "peer selection and routes, every node",
    `${ms(median(selectMs))} (${count(routeCount)} routes; first run ${ms(selectMs[0]!)})`,
    "≤ 1 s",
    `building the model from the same events (${ms(model)})`,
    median(selectMs) / model,
  ),
);
console.log(
  line(
    "engine load: selection, routes and every encoded snapshot",
    `${ms(median(loadMs))} (${count(snapshots)} snapshots; first run ${ms(loadMs[0]!)})`,
    "≤ 1 s",
    `building the model (${ms(model)})`,
    median(loadMs) / model,
  ),
);

// 2. One changed node at a time, on a loaded engine.
const engine = new SnapshotEngine({ debounceMs: 0, now: () => NOW });
engine.load(modelOf(events));
const random = lcg(99);
const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;
const feed = fabric.feed;
let joined = 0;
const kinds: Record<string, () => void> = {
  "plain node load": () => void feed.node(pick(fabric.plain), { load: Math.round(random() * 10) / 10 }),
  "relay load": () => void feed.node(pick(fabric.relays), { load: Math.round(random() * 10) / 10 }),
  "node offline or back": () => void feed.node(pick(fabric.all), { online: random() < 0.5 }),
  "probe figure": () => void feed.probe(CLUSTER, pick(fabric.all), pick(fabric.all), 1 + random() * 120),
  "node joins": () => feed.member(`joined-${joined++}`, CLUSTER, { region: pick(REGIONS) }),
};
const names = Object.keys(kinds);
const byKind = new Map<string, { ms: number[]; rebuilt: number[] }>(
  names.map((k) => [k, { ms: [], rebuilt: [] }]),
);
const all: number[] = [];
for (let c = 0; c < CHANGES; c++) {
  const kind = names[c % names.length]!;
  const from = feed.events.length;
  kinds[kind]!();
  const [stats, took] = timed(() => {
    for (const e of feed.events.slice(from)) engine.apply(e);
    return engine.flush();
  });
  byKind.get(kind)!.ms.push(took);
  byKind.get(kind)!.rebuilt.push(stats.rebuilt);
  all.push(took);
}
const sortMs = median(Array.from({ length: 5 }, () => sortCandidates(engine.fabric)));
const changes = summarize(all);
console.log(
  line(
    "one changed node",
    `p50 ${ms(changes.p50)}, p99 ${ms(changes.p99)}, max ${ms(changes.max)} over ${count(changes.n)} changes`,
    "≤ 10 ms",
    `sorting ${count(NODES)} scored candidates once (${ms(sortMs)})`,
    changes.p99 / sortMs,
  ),
);
for (const [kind, { ms: times, rebuilt }] of byKind) {
  const s = summarize(times);
  const r = summarize(rebuilt);
  console.log(
    `  ${kind}: p50 ${ms(s.p50)}, max ${ms(s.max)}; snapshots rebuilt p50 ${count(r.p50)}, max ${count(r.max)}`,
  );
}
console.log(`routing bench done in ${((performance.now() - t0) / 1_000).toFixed(1)} s`);
