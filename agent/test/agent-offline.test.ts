import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { promisify } from "node:util";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { TlsCredentials } from "@fabric/platform";
import { createTestPki, freePort, type ChildService, type TestPki } from "@fabric/platform/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EXIT } from "../src/exit-codes.js";
import { persistSnapshot } from "../src/snapshot-store.js";
import { AGENT_BIN, preparedHome, spawnAgent, status, workload } from "./fixtures/agent-home.js";
import { httpServerScript, nodeWorkload, signSnapshot, snapshot } from "./fixtures/snapshots.js";
import { removeTempDirs } from "./fixtures/temp-dirs.js";
import { processAlive, waitFor } from "./fixtures/wait.js";

let pki: TestPki;
let router: TlsCredentials;
let endpoints: { routerUrl: string; registryUrl: string; enrollmentUrl: string };
const agents: ChildService[] = [];

beforeAll(async () => {
  pki = await createTestPki("fabric.test");
  router = await pki.issue({ kind: "service", id: "router" });
  // Nothing listens on these: the control plane is gone.
  const [a, b, c] = [await freePort(), await freePort(), await freePort()];
  endpoints = {
    routerUrl: `https://127.0.0.1:${a}`,
    registryUrl: `https://127.0.0.1:${b}`,
    enrollmentUrl: `https://127.0.0.1:${c}`,
  };
});

afterEach(async () => {
  for (const agent of agents.splice(0)) await agent.stop();
});

afterAll(removeTempDirs);

const answers = (port: number) =>
  fetch(`http://127.0.0.1:${port}/`).then(
    (r) => r.ok,
    () => false,
  );

async function offlineSnapshot() {
  const port = await freePort();
  const web = nodeWorkload("web", httpServerScript(port), {
    healthCheck: {
      probe: { case: "http", value: { port, path: "/healthz" } },
      interval: durationFromMs(1_000),
    },
  });
  const intruder = nodeWorkload("intruder", "setInterval(() => {}, 1000)", { role: "entry-node" });
  const snap = snapshot({
    nodeId: "n-1",
    clusterId: "c1",
    version: 4n,
    roles: ["relay-node"],
    workloads: [
      { spec: web, generation: 1n },
      { spec: intruder, generation: 1n },
    ],
  });
  return { port, envelope: signSnapshot(router, snap) };
}

describe("running with the control plane gone", { timeout: 60_000 }, () => {
  it("runs the workloads of the persisted verified snapshot, starts nothing else, and shows it in status", async () => {
    const { port, envelope } = await offlineSnapshot();
    const { home, paths } = await preparedHome({ pki, endpoints, snapshot: envelope });
    const agent = await spawnAgent(home);
    agents.push(agent);

    const web = await waitFor(
      "web healthy from the persisted snapshot",
      () => workload(paths, "web")?.state === "HEALTHY" && workload(paths, "web"),
      15_000,
    );
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe("hello");
    // The router and registry stay unreachable through several reconnect attempts; nothing changes.
    await waitFor(
      "reconnect attempts",
      () => (agent.output().match(/router watch interrupted/g) ?? []).length >= 4,
      15_000,
    );
    const later = status(paths)!;
    expect(later.workloads.map((w) => w.id)).toEqual(["web"]);
    expect(later.workloads[0]).toMatchObject({ state: "HEALTHY", pid: web.pid, restarts: 0 });
    expect(later.snapshot?.version).toBe("4");
    expect(later.connections).toEqual({ router: false, registry: false });
    expect(later.health.state).toBe("DEGRADED");
    expect(later.health.message).toMatch(/router unreachable: running from the last verified snapshot/);
    expect(agent.output()).toMatch(/needs role \\"entry-node\\", which this node does not hold/);

    const { stdout } = await promisify(execFile)(process.execPath, [AGENT_BIN, "status"], {
      env: { ...process.env, FABRIC_AGENT_HOME: home },
    });
    expect(stdout).toMatch(/Node:\s+n-1/);
    expect(stdout).toMatch(/SPIFFE ID:\s+spiffe:\/\/fabric\.test\/cluster\/c1\/node\/n-1/);
    expect(stdout).toMatch(/Expires:\s+\S+ \(in 23h \d+m\)/);
    expect(stdout).toMatch(/Snapshot:\s+version 4/);
    expect(stdout).toMatch(new RegExp(`web\\s+HEALTHY\\s+${web.pid}\\s+0\\s+healthy\\s+native`));

    expect(await agent.stop()).toBe(EXIT.OK);
    expect(processAlive(web.pid)).toBe(false);
    expect(status(paths)?.state).toBe("stopped");
  });

  it("refuses a persisted snapshot that was altered on disk and starts nothing", async () => {
    const { envelope } = await offlineSnapshot();
    const { home, paths } = await preparedHome({ pki, endpoints, snapshot: envelope });
    const bytes = readFileSync(paths.snapshot);
    const at = bytes.indexOf(Buffer.from("entry-node"));
    bytes.write("relay-node", at); // try to smuggle the intruder in under a role the node holds
    writeFileSync(paths.snapshot, bytes);
    const agent = await spawnAgent(home);
    agents.push(agent);
    await waitFor(
      "status written",
      () => status(paths)?.health.message.includes("persisted snapshot refused"),
      15_000,
    );
    expect(status(paths)?.workloads).toEqual([]);
    expect(status(paths)?.snapshot).toBeNull();
    expect(status(paths)?.health).toMatchObject({ state: "UNHEALTHY" });
  });

  it("refuses an older snapshot planted in its state directory after an offline restart", async () => {
    // Version 5 removed "zombie"; version 4, genuinely signed, still lists it.
    const [webPort, zombiePort] = [await freePort(), await freePort()];
    const web = nodeWorkload("web", httpServerScript(webPort));
    const zombie = nodeWorkload("zombie", httpServerScript(zombiePort));
    const signed = (version: bigint, workloads: (typeof web)[]) =>
      signSnapshot(
        router,
        snapshot({
          nodeId: "n-1",
          clusterId: "c1",
          version,
          roles: ["relay-node"],
          workloads: workloads.map((spec) => ({ spec, generation: 1n })),
        }),
      );
    const { home, paths } = await preparedHome({ pki, endpoints, snapshot: signed(5n, [web]) });
    const first = await spawnAgent(home);
    agents.push(first);
    await waitFor("web running from version 5", () => workload(paths, "web")?.state === "RUNNING", 15_000);
    expect(JSON.parse(readFileSync(paths.snapshotHighWater, "utf8"))).toEqual({ version: "5" });
    expect(await first.stop()).toBe(EXIT.OK);

    // Offline, the older snapshot is put back in place of the newer one, and the agent restarted.
    persistSnapshot(paths, signed(4n, [web, zombie]));
    const second = await spawnAgent(home);
    agents.push(second);
    await waitFor(
      "the planted snapshot refused, saying why",
      () =>
        /version 4 is older than version 5, the newest this node has trusted \(rolled back or replayed\).*persisted snapshot refused; waiting for the router/.test(
          second.output(),
        ),
      15_000,
    );
    await waitFor("status written", () =>
      status(paths)?.health.message.includes("persisted snapshot refused"),
    );
    expect(status(paths)?.snapshot).toBeNull();
    expect(status(paths)?.workloads).toEqual([]);
    expect(await answers(zombiePort)).toBe(false);
    // The mark is never lowered.
    expect(JSON.parse(readFileSync(paths.snapshotHighWater, "utf8"))).toEqual({ version: "5" });
  });

  it("exits for re-enrollment at once when its certificate has expired", async () => {
    const expired = await pki.issue(
      { kind: "node", id: "n-1", cluster: "c1" },
      { notBefore: new Date(Date.now() - 7_200_000), notAfter: new Date(Date.now() - 60_000) },
    );
    const { envelope } = await offlineSnapshot();
    const { home, paths } = await preparedHome({ pki, endpoints, node: expired, snapshot: envelope });
    const agent = await spawnAgent(home);
    expect(await agent.exited).toBe(EXIT.REENROLL_REQUIRED);
    expect(agent.output()).toMatch(
      /the node certificate expired at .*Re-enroll with: fabric-agent enroll --force/,
    );
    expect(status(paths)?.workloads ?? []).toEqual([]);
  });
});
