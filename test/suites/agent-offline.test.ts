// fabric-agent with the control plane gone: the real CA, registry and router as processes, the agent as
// a process, its workloads as grandchildren. While every service is killed the node keeps running what
// its last verified snapshot authorizes (even across an agent restart), never starts anything else, and
// picks up changes again once the control plane is back.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { inspectCertificate } from "@fabric/platform";
import { freePort, spawnTs, type ChildService } from "@fabric/platform/testing";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentPaths, installIdentity, writeNodeRecord, type AgentPaths } from "../../agent/src/state-dir.js";
import { readStatusFile } from "../../agent/src/status.js";
import { startFabric, type Fabric } from "../harness/fabric.js";

const AGENT_MAIN = join(import.meta.dirname, "../../agent/src/main.ts");
// Quick reconnects and reports, so the outage and the return show within seconds.
const AGENT_ENV = {
  FABRIC_RECONNECT_BASE_MS: "100",
  FABRIC_RECONNECT_MAX_MS: "500",
  FABRIC_HEARTBEAT_INTERVAL_MS: "300",
  FABRIC_LOG_LEVEL: "info",
  // An agent that is not root cannot give workloads a user of their own (CI runs as root).
  FABRIC_INSECURE_SAME_USER_WORKLOADS: String(process.getuid?.() !== 0),
};
const CONTROL_PLANE = ["ca", "registry", "router"] as const;

let fabric: Fabric;
let home: string;
let paths: AgentPaths;
let agent: ChildService | undefined;
const ports: Record<string, number> = {};

beforeAll(async () => {
  fabric = await startFabric({ services: [...CONTROL_PLANE] });
  for (const name of ["web", "later", "intruder"]) ports[name] = await freePort();
  const registry = fabric.client(RegistryService, "registry");
  await registry.createCluster({ clusterId: "c1", name: "Cluster one" });
  // The node as enrollment would have registered it, and its certificate.
  await fabric.client(RegistryService, "registry", fabric.serviceIdentity("enrollment")).registerNode({
    nodeId: "n-1",
    clusterId: "c1",
    capabilities: ["can_route_mesh"],
    grantedRoles: ["relay-node"],
    joinRequestId: "jr-n-1",
  });
  const node = await fabric.issue({ kind: "node", id: "n-1", cluster: "c1", grant: "relay-node" });
  home = mkdtempSync(join(tmpdir(), "fabric-agent-offline-"));
  paths = agentPaths(home);
  installIdentity(paths, node);
  writeNodeRecord(paths, {
    nodeId: "n-1",
    clusterId: "c1",
    trustDomain: fabric.trustDomain,
    spiffeId: inspectCertificate(node.certificatePem).spiffeId!,
    grantedRoles: ["relay-node"],
    endpoints: {
      registryUrl: fabric.urls.registry!.grpc,
      routerUrl: fabric.urls.router!.grpc,
      // No enrollment here: the 30-day certificate is not renewed during the test.
      enrollmentUrl: `https://127.0.0.1:${await freePort()}`,
    },
    enrolledAt: new Date().toISOString(),
  });
}, 180_000);

afterAll(async () => {
  await agent?.stop();
  await fabric?.close();
  if (home) rmSync(home, { recursive: true, force: true });
});

function startAgent(): Promise<ChildService> {
  return spawnTs(AGENT_MAIN, { args: ["run"], env: { FABRIC_AGENT_HOME: home, ...AGENT_ENV } });
}

/** `node -e` serving 200 on `port`; a health check the agent probes. */
function httpWorkload(id: string, role: string, port: number) {
  const script = `require("node:http").createServer((q, s) => s.end("${id}")).listen(${port}, "127.0.0.1")`;
  return {
    id,
    clusterId: "c1",
    role,
    runtime: Runtime.NATIVE,
    environment: Environment.DEV,
    command: process.execPath,
    args: ["-e", script],
    healthCheck: {
      probe: { case: "http" as const, value: { port, path: "/" } },
      interval: durationFromMs(1_000),
      timeout: durationFromMs(500),
    },
    stopGracePeriod: durationFromMs(1_000),
  };
}

async function waitFor<T>(
  what: string,
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 20_000,
) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}\n--- agent ---\n${agent?.output().slice(-3_000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const workload = (id: string) => readStatusFile(paths)?.workloads.find((w) => w.id === id);
const answers = (port: number) =>
  fetch(`http://127.0.0.1:${port}/`).then(
    (r) => r.ok,
    () => false,
  );

describe("a node whose control plane goes away", () => {
  it("runs what its verified snapshot authorizes, and nothing else", async () => {
    const registry = fabric.client(RegistryService, "registry");
    await registry.putWorkload({ spec: httpWorkload("web", "relay-node", ports.web!) });
    // Placed on a role this node does not hold: no snapshot of this node will ever authorize it.
    await registry.putWorkload({ spec: httpWorkload("intruder", "entry-node", ports.intruder!) });
    agent = await startAgent();
    await waitFor("web healthy", () => workload("web")?.state === "HEALTHY");
    expect(readStatusFile(paths)!.workloads.map((w) => w.id)).toEqual(["web"]);
    expect(await answers(ports.intruder!)).toBe(false);
  }, 60_000);

  it("keeps it running with every service killed, also across an agent restart", async () => {
    const before = workload("web")!;
    const version = readStatusFile(paths)!.snapshot!.version;
    for (const service of CONTROL_PLANE) await fabric.kill(service);
    await waitFor("both streams down", () => {
      const s = readStatusFile(paths);
      return s && !s.connections.router && !s.connections.registry;
    });
    await waitFor(
      "several reconnect attempts",
      () => (agent!.output().match(/interrupted/g) ?? []).length >= 4,
    );
    expect(workload("web")).toMatchObject({ state: "HEALTHY", pid: before.pid, restarts: 0 });
    expect(await answers(ports.web!)).toBe(true);
    expect(readStatusFile(paths)!.snapshot!.version).toBe(version);

    // A restart with nobody to ask: the agent runs from the persisted, re-verified snapshot.
    await agent!.stop();
    agent = await startAgent();
    await waitFor("web healthy again, offline", () => workload("web")?.state === "HEALTHY");
    const status = readStatusFile(paths)!;
    expect(status.connections).toEqual({ router: false, registry: false });
    expect(status.snapshot!.version).toBe(version);
    expect(status.workloads.map((w) => w.id)).toEqual(["web"]);
    expect(await answers(ports.intruder!)).toBe(false);
  }, 60_000);

  it("resyncs when the control plane returns: new work starts, removed work stops", async () => {
    for (const service of CONTROL_PLANE) await fabric.start(service);
    await waitFor(
      "reconnected",
      () => {
        const s = readStatusFile(paths);
        return s?.connections.router && s.connections.registry;
      },
      30_000,
    );
    const registry = fabric.client(RegistryService, "registry");
    await registry.putWorkload({ spec: httpWorkload("later", "relay-node", ports.later!) });
    await waitFor("later healthy", () => workload("later")?.state === "HEALTHY");
    const web = workload("web")!;
    await registry.deleteWorkload({ workloadId: "web" });
    await waitFor("web stopped", async () => !workload("web") && !(await answers(ports.web!)));
    expect(web.pid).toBeGreaterThan(0);
    expect(readStatusFile(paths)!.workloads.map((w) => w.id)).toEqual(["later"]);
    expect(await answers(ports.intruder!)).toBe(false);
    // The registry hears from the node again.
    await waitFor(
      "node online in the registry",
      async () => (await registry.getNode({ nodeId: "n-1" })).node?.online,
    );
  }, 60_000);
});
