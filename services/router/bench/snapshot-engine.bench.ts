// Snapshot engine figures for a 10,000-node cluster, printed (not asserted), with ratios against a
// baseline measured in the same run: protobuf-es's generic encoding of the same snapshots, i.e. what
// merely serializing the result with the library costs.
//
//   node --import tsx services/router/bench/snapshot-engine.bench.ts [nodes]
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { SnapshotSchema } from "@fabric/proto/fabric/router/v1/router_pb.js";
import { SnapshotEngine } from "../src/snapshot-engine.js";
import { Feed, NOW, modelOf } from "../test/fixtures/feed.js";

const N = Number(process.argv[2] ?? 10_000);
const REGIONS = ["eu-central", "eu-west", "us-east", "ap-south"];
const out = (line: string) => process.stdout.write(`${line}\n`);

const feed = new Feed();
for (let i = 0; i < N; i++) {
  const id = `n${i}`;
  feed.member(id, "c1", { region: REGIONS[i % 4]!, load: ((i * 37) % 101) / 100 });
  if (i % 50 === 0) feed.role(id, "c1", "relay-node");
  if (i % 100 === 1) feed.role(id, "c1", "egress-node");
  if (i % 7 === 0) feed.probe("c1", id, `n${(i * 13) % N}`, 20);
}
for (let p = 0; p < 20; p++) {
  feed.pool(`p${p}`, "c1", [`o${p % 5}`], [[`n${(p * 100 + 1) % N}`], [`n${(p * 100 + 101) % N}`]]);
}
for (let w = 0; w < 20; w++) feed.workload(`w${w}`, "c1", "egress-node", { organizationId: `o${w % 5}` });

const cpuMs = (since: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
};

const heapBefore = process.memoryUsage().heapUsed;
const engine = new SnapshotEngine({ debounceMs: 0, now: () => NOW });
let cpu = process.cpuUsage();
let wall = performance.now();
engine.load(modelOf(feed.events));
const fullWall = performance.now() - wall;
const fullCpu = cpuMs(cpu);
const heapPerSnapshot = (process.memoryUsage().heapUsed - heapBefore) / N;

// baseline: protobuf-es encoding the same snapshots (decoded from ours)
const snapshots = [...Array(N).keys()].map((i) =>
  fromBinary(SnapshotSchema, engine.current("c1", `n${i}`)!.bytes),
);
cpu = process.cpuUsage();
for (const s of snapshots) toBinary(SnapshotSchema, s);
const baselineCpu = cpuMs(cpu);

out(`nodes: ${N}`);
out(`full selection + routes + encoding: ${fullWall.toFixed(0)} ms wall, ${fullCpu.toFixed(0)} ms CPU`);
out(`baseline, protobuf-es toBinary of the same snapshots: ${baselineCpu.toFixed(0)} ms CPU`);
out(`ratio full recompute / baseline encoding: ${(fullCpu / baselineCpu).toFixed(2)}`);
out(`heap per node (model, selection, snapshot): ${(heapPerSnapshot / 1024).toFixed(1)} KiB`);

// Each kind of change 21 times on different nodes (the first ones warm the JIT up); the median counts.
const changes: [string, (k: number) => ReturnType<Feed["node"]>][] = [
  ["one node's load", (k) => feed.node(`n${k * 10 + 5}`, { region: REGIONS[(k * 10 + 5) % 4]!, load: 0.95 })],
  [
    "a node goes offline",
    (k) => feed.node(`n${k * 10 + 6}`, { region: REGIONS[(k * 10 + 6) % 4]!, online: false }),
  ],
  [
    "a relay goes offline",
    (k) => feed.node(`n${k * 50 + 1000}`, { region: REGIONS[(k * 50) % 4]!, online: false }),
  ],
  ["a relay role assigned", (k) => feed.role(`n${k * 10 + 7}`, "c1", "relay-node")],
  ["a probe update", (k) => feed.probe("c1", `n${k * 10 + 8}`, `n${k * 10 + 9}`, 3)],
];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [label, change] of changes) {
  const ms: number[] = [];
  const rebuilt: number[] = [];
  for (let k = 0; k < 21; k++) {
    const event = change(k);
    wall = performance.now();
    engine.apply(event);
    rebuilt.push(engine.flush().rebuilt);
    ms.push(performance.now() - wall);
  }
  out(
    `${label}: median ${median(ms).toFixed(2)} ms, ${median(rebuilt)} snapshots rebuilt; ` +
      `ratio to one baseline encoding per node: ${(median(ms) / (baselineCpu / N)).toFixed(1)}`,
  );
}
