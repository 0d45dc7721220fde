// fabric-agent against the real control plane: the four services as child processes (test/harness),
// the agent as a child process, a native workload as a grandchild. One node's life, in order: enroll,
// approval, snapshot, workload, role removal, control plane outage and return, renewal, revocation.
import { readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { inspectCertificate } from "@fabric/platform";
import { freePort, type ChildService } from "@fabric/platform/testing";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { EnrollmentService, JoinRequestState } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFabric, type Fabric } from "../../test/harness/fabric.js";
import { EXIT } from "../src/exit-codes.js";
import { agentPaths, loadCurrentIdentity, type AgentPaths } from "../src/state-dir.js";
import { spawnAgent, status, workload } from "./fixtures/agent-home.js";
import { httpServerScript } from "./fixtures/snapshots.js";
import { processAlive, waitFor } from "./fixtures/wait.js";
import { removeTempDirs, tempDir } from "./fixtures/temp-dirs.js";

/** Node certificates live this long, so the agent renews (at two thirds) while the test runs. */
const NODE_LIFETIME_MS = 45_000;

let fabric: Fabric;
let home: string;
let paths: AgentPaths;
let agent: ChildService | undefined;
let nodeId: string;
let enrolledSerial: string;
let port: number;

beforeAll(async () => {
  fabric = await startFabric({
    services: ["ca", "registry", "enrollment", "router"],
    env: { enrollment: { FABRIC_NODE_CERTIFICATE_LIFETIME_MS: String(NODE_LIFETIME_MS) } },
  });
  home = tempDir("agent-e2e-");
  paths = agentPaths(home);
  port = await freePort();
}, 180_000);

afterAll(async () => {
  await agent?.stop();
  await fabric?.close();
  removeTempDirs();
});

const registry = () => fabric.client(RegistryService, "registry");
const enrollment = () => fabric.client(EnrollmentService, "enrollment");

function webSpec(id: string, workloadPort: number) {
  return {
    id,
    clusterId: "c1",
    role: "relay-node",
    runtime: Runtime.NATIVE,
    environment: Environment.DEV,
    command: process.execPath,
    args: ["-e", httpServerScript(workloadPort)],
    healthCheck: {
      probe: { case: "http" as const, value: { port: workloadPort, path: "/healthz" } },
      interval: durationFromMs(1_000),
      timeout: durationFromMs(500),
    },
    stopGracePeriod: durationFromMs(1_000),
  };
}

describe("a node's life against the real control plane", () => {
  it("enrolls: the key stays on the host, an admin approves, the identity is stored", async () => {
    await registry().createCluster({ clusterId: "c1", name: "Cluster one" });
    const { token } = await enrollment().createJoinToken({ clusterId: "c1", allowedRoles: ["relay-node"] });
    const caFile = join(home, "fabric-root.pem");
    writeFileSync(caFile, fabric.admin.caBundlePem);
    const enroll = await spawnAgent(
      home,
      [
        "enroll",
        "--server",
        fabric.urls.enrollment!.grpc,
        "--ca-bundle",
        caFile,
        "--name",
        "edge-1",
        "--cluster",
        "c1",
        "--roles",
        "relay-node",
        "--capabilities",
        "can_route_mesh",
        "--registry-url",
        fabric.urls.registry!.grpc,
        "--router-url",
        fabric.urls.router!.grpc,
        "--trust-domain",
        fabric.trustDomain,
      ],
      { FABRIC_JOIN_TOKEN: token },
    );
    const pending = await waitFor("a pending join request", async () => {
      const { joinRequests } = await enrollment().listJoinRequests({
        clusterId: "c1",
        state: JoinRequestState.PENDING,
      });
      return joinRequests[0];
    });
    await waitFor("progress shown", () =>
      enroll.output().includes(`Waiting for approval of join request ${pending.id}`),
    );
    // The admin compares the fingerprint the host printed with the request's before approving.
    expect(enroll.output()).toContain(`Public key SHA-256: ${pending.publicKeySha256}`);
    expect(pending.facts?.hostname).toBeTruthy();
    expect(pending.capabilities).toEqual(["can_route_mesh"]);
    await enrollment().approveJoinRequest({ joinRequestId: pending.id });
    expect(await enroll.exited).toBe(EXIT.OK);
    expect(enroll.output()).not.toContain(token.split(".")[1]);
    const facts = inspectCertificate(loadCurrentIdentity(paths).certificatePem);
    nodeId = facts.subjectCommonName!;
    enrolledSerial = facts.serialHex;
    expect(facts.spiffeId).toBe(`spiffe://${fabric.trustDomain}/cluster/c1/node/${nodeId}`);
  }, 60_000);

  it("runs the workload its verified snapshot assigns and reports it healthy", async () => {
    agent = await spawnAgent(home, ["run"]);
    await registry().putWorkload({ spec: webSpec("web", port) });
    const web = await waitFor(
      "web healthy",
      () => workload(paths, "web")?.state === "HEALTHY" && workload(paths, "web"),
      30_000,
    );
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe("hello");
    await waitFor("the registry sees it healthy", async () => {
      const { statuses } = await registry().listWorkloadStatus({ workloadId: "web", nodeId });
      return statuses.some((s) => s.state === WorkloadState.HEALTHY);
    });
    expect(processAlive(web.pid)).toBe(true);
  }, 60_000);

  it("stops the workload within two seconds of its role being removed", async () => {
    const web = workload(paths, "web")!;
    const version = Number(status(paths)!.snapshot!.version);
    const { roleAssignments } = await registry().listRoleAssignments({ clusterId: "c1", nodeId });
    const relay = roleAssignments.find((a) => a.role === "relay-node")!;
    await registry().removeRole({ roleAssignmentId: relay.id });
    await waitFor("a newer snapshot", () => Number(status(paths)?.snapshot?.version ?? 0) > version, 10_000);
    await waitFor("web stopped", () => !processAlive(web.pid), 2_000);
    expect(status(paths)?.workloads).toEqual([]);
  }, 30_000);

  it("keeps running from the last verified snapshot with the control plane gone, and resyncs when it returns", async () => {
    await registry().assignRole({ nodeId, clusterId: "c1", role: "relay-node" });
    const web = await waitFor(
      "web back",
      () => workload(paths, "web")?.state === "HEALTHY" && workload(paths, "web"),
      15_000,
    );
    const version = status(paths)!.snapshot!.version;
    for (const service of ["router", "enrollment", "registry", "ca"] as const) await fabric.kill(service);
    await waitFor("disconnected", () => {
      const s = status(paths);
      return s && !s.connections.router && !s.connections.registry;
    });
    await waitFor(
      "reconnect attempts",
      () => (agent!.output().match(/router watch interrupted/g) ?? []).length >= 3,
      15_000,
    );
    expect(workload(paths, "web")).toMatchObject({ state: "HEALTHY", pid: web.pid, restarts: 0 });
    expect(status(paths)!.workloads.map((w) => w.id)).toEqual(["web"]);
    expect(status(paths)!.snapshot!.version).toBe(version);

    for (const service of ["ca", "registry", "enrollment", "router"] as const) await fabric.start(service);
    await waitFor(
      "reconnected",
      () => {
        const s = status(paths);
        return s?.connections.router && s.connections.registry;
      },
      30_000,
    );
    const second = await freePort();
    await registry().putWorkload({ spec: webSpec("web-2", second) });
    await waitFor(
      "web-2 healthy after the resync",
      () => workload(paths, "web-2")?.state === "HEALTHY",
      30_000,
    );
    expect(workload(paths, "web")?.pid).toBe(web.pid);
  }, 120_000);

  it("renews its certificate at two thirds of its lifetime", async () => {
    const renewed = await waitFor(
      "a renewed certificate",
      () => {
        const facts = inspectCertificate(loadCurrentIdentity(paths).certificatePem);
        return facts.serialHex !== enrolledSerial && facts;
      },
      NODE_LIFETIME_MS,
    );
    expect(renewed.spiffeId).toBe(`spiffe://${fabric.trustDomain}/cluster/c1/node/${nodeId}`);
    expect(readlinkSync(paths.identity)).toMatch(new RegExp(`^identities/${renewed.serialHex}-`));
    await waitFor("streams on the new certificate", () => {
      const s = status(paths);
      return s?.connections.router && s.connections.registry;
    });
    expect(agent!.process.exitCode).toBeNull();
  }, 60_000);

  it("stops when revoked: the streams are cut and the agent exits asking for re-enrollment", async () => {
    const pids = status(paths)!.workloads.map((w) => w.pid);
    await registry().revokeNode({ nodeId, comment: "e2e: decommissioned" });
    expect(await agent!.exited).toBe(EXIT.REENROLL_REQUIRED);
    expect(agent!.output()).toMatch(/revoked/);
    expect(agent!.output()).toMatch(/Re-enroll with: fabric-agent enroll --force/);
    for (const pid of pids) expect(processAlive(pid)).toBe(false);
    agent = undefined;
  }, 30_000);
});
