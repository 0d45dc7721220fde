import { existsSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { createHash, createPublicKey } from "node:crypto";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { inspectCertificate, type TlsCredentials } from "@fabric/platform";
import { createTestPki, freePort, type ChildService, type TestPki } from "@fabric/platform/testing";
import { DirectiveKind } from "@fabric/proto/fabric/registry/v1/session_pb.js";
import { WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EXIT } from "../src/exit-codes.js";
import { agentPaths, loadCurrentIdentity, readNodeRecord } from "../src/state-dir.js";
import { preparedHome, spawnAgent, status, workload } from "./fixtures/agent-home.js";
import { EnrollmentStandIn, RegistryStandIn, RouterStandIn } from "./fixtures/control-plane.js";
import { httpServerScript, nodeWorkload, signSnapshot, snapshot } from "./fixtures/snapshots.js";
import { processAlive, waitFor } from "./fixtures/wait.js";
import { removeTempDirs, tempDir } from "./fixtures/temp-dirs.js";

let pki: TestPki;
let ids: Record<"router" | "registry" | "enrollment" | "foreignRouter", TlsCredentials>;
let router: RouterStandIn;
let registry: RegistryStandIn;
let enrollment: EnrollmentStandIn;
let endpoints: { routerUrl: string; registryUrl: string; enrollmentUrl: string };
let routerPort: number;
const agents: ChildService[] = [];

beforeAll(async () => {
  pki = await createTestPki("fabric.test");
  const foreign = await createTestPki("fabric.test");
  ids = {
    router: await pki.issue({ kind: "service", id: "router" }),
    registry: await pki.issue({ kind: "service", id: "registry" }),
    enrollment: await pki.issue({ kind: "service", id: "enrollment" }),
    foreignRouter: await foreign.issue({ kind: "service", id: "router" }),
  };
  routerPort = await freePort();
  router = new RouterStandIn(ids.router, "fabric.test");
  registry = new RegistryStandIn(ids.registry, "fabric.test");
  enrollment = new EnrollmentStandIn(pki, ids.enrollment);
  endpoints = {
    routerUrl: await router.start(routerPort),
    registryUrl: await registry.start(),
    enrollmentUrl: await enrollment.start(),
  };
});

afterEach(async () => {
  for (const agent of agents.splice(0)) await agent.stop();
  router.current = undefined;
  if (!router.server) await router.start(routerPort);
});

afterAll(async () => {
  await Promise.all([router.stop(), registry.stop(), enrollment.stop()]);
  removeTempDirs();
});

async function webWorkload() {
  const port = await freePort();
  return {
    port,
    spec: nodeWorkload("web", httpServerScript(port), {
      healthCheck: {
        probe: { case: "http", value: { port, path: "/healthz" } },
        interval: durationFromMs(1_000),
      },
    }),
  };
}

const snap = (version: bigint, init: Parameters<typeof snapshot>[0] = {}) =>
  snapshot({ nodeId: "n-1", clusterId: "c1", version, roles: ["relay-node"], ...init });

describe("fabric-agent enroll", { timeout: 60_000 }, () => {
  it("keeps its key, joins with host facts, shows progress while waiting, and stores the approved identity", async () => {
    const home = tempDir("agent-enroll-");
    const caFile = join(home, "root.pem");
    writeFileSync(caFile, pki.rootPem);
    const before = enrollment.joins.length;
    writeFileSync(
      join(home, "agent.yaml"),
      "capabilities: [can_route_mesh]\nregion: eu-central\nlabels: { site: kazan-dc1 }\n",
    );
    const agent = await spawnAgent(home, [
      "enroll",
      "--server",
      endpoints.enrollmentUrl,
      "--token",
      enrollment.token,
      "--ca-bundle",
      caFile,
      "--name",
      "edge-1",
      "--roles",
      "relay-node",
      "--capabilities",
      "can_run_vpn_exit",
      "--registry-url",
      endpoints.registryUrl,
      "--router-url",
      endpoints.routerUrl,
      "--trust-domain",
      "fabric.test",
    ]);
    agents.push(agent);
    const joined = await waitFor("join request", () => enrollment.joins[before]);
    await waitFor(
      "progress lines",
      () =>
        (agent.output().match(/Waiting for approval of join request jr-\d+: PENDING, 0m 0\ds elapsed/g) ?? [])
          .length >= 2,
    );
    expect(joined.request).toMatchObject({
      nodeName: "edge-1",
      requestedRoles: ["relay-node"],
      capabilities: ["can_run_vpn_exit"], // the flag wins over agent.yaml
    });
    expect(joined.request.facts).toMatchObject({
      region: "eu-central",
      labels: { site: "kazan-dc1" },
      agentVersion: "0.1.0",
    });
    expect(joined.request.facts?.cpuCores).toBeGreaterThan(0);
    expect(joined.request.csrPem).not.toMatch(/PRIVATE KEY/);

    await enrollment.decide(joined.id, { approve: true, nodeId: "n-7", roles: ["relay-node"] });
    expect(await agent.exited).toBe(EXIT.OK);
    const out = agent.output();
    expect(out).toMatch(/Public key SHA-256: [0-9a-f]{64}/);
    expect(out).toMatch(
      /Enrolled as node n-7 in cluster c1 \(spiffe:\/\/fabric\.test\/cluster\/c1\/node\/n-7\)/,
    );
    expect(out).not.toContain(enrollment.token.split(".")[1]);

    const paths = agentPaths(home);
    const identity = loadCurrentIdentity(paths);
    expect(statSync(join(paths.identity, "key.pem")).mode & 0o777).toBe(0o600);
    // The certificate is for the key generated on this host, whose public half went out in the CSR.
    const spki = (pem: string) =>
      createPublicKey(pem).export({ type: "spki", format: "der" }).toString("hex");
    expect(spki(identity.certificatePem)).toBe(spki(identity.privateKeyPem));
    expect(joined.publicKey.export({ type: "spki", format: "der" }).toString("hex")).toBe(
      spki(identity.privateKeyPem),
    );
    expect(out).toContain(createHashHex(identity.privateKeyPem));
    expect(readNodeRecord(paths)).toMatchObject({
      nodeId: "n-7",
      clusterId: "c1",
      trustDomain: "fabric.test",
      endpoints,
    });
    expect(existsSync(paths.pendingEnrollment)).toBe(false);

    // Enrolling again over a valid identity needs --force.
    const again = await spawnAgent(home, [
      "enroll",
      "--server",
      endpoints.enrollmentUrl,
      "--token",
      enrollment.token,
    ]);
    expect(await again.exited).toBe(EXIT.USAGE);
    expect(again.output()).toMatch(
      /already enrolled as spiffe:\/\/fabric\.test\/cluster\/c1\/node\/n-7 .*Use --force/,
    );
  });

  it("resumes waiting after an interruption without a new Join, and exits 3 when rejected", async () => {
    const home = tempDir("agent-enroll-");
    const caFile = join(home, "root.pem");
    writeFileSync(caFile, pki.rootPem);
    const args = [
      "enroll",
      "--server",
      endpoints.enrollmentUrl,
      "--token",
      enrollment.token,
      "--ca-bundle",
      caFile,
    ];
    const before = enrollment.joins.length;
    const first = await spawnAgent(home, args);
    const joined = await waitFor("join request", () => enrollment.joins[before]);
    await waitFor("waiting", () => first.output().includes("Waiting for approval"));
    await first.kill();
    const joins = enrollment.joins.length;
    const second = await spawnAgent(home, args);
    agents.push(second);
    await waitFor("resumed", () =>
      second.output().includes(`Resuming enrollment: join request ${joined.id}`),
    );
    expect(enrollment.joins.length).toBe(joins);
    await enrollment.decide(joined.id, { approve: false, reason: "unknown host" });
    expect(await second.exited).toBe(EXIT.ENROLLMENT_REFUSED);
    expect(second.output()).toMatch(/join request jr-\d+ was rejected: unknown host/);
  });

  it("refuses a wrong token and a CA bundle that does not vouch for the server", async () => {
    const home = tempDir("agent-enroll-");
    const caFile = join(home, "root.pem");
    writeFileSync(caFile, pki.rootPem);
    const bad = await spawnAgent(home, [
      "enroll",
      "--server",
      endpoints.enrollmentUrl,
      "--token",
      "tok1.wrong",
      "--ca-bundle",
      caFile,
    ]);
    expect(await bad.exited).toBe(EXIT.ENROLLMENT_REFUSED);
    expect(bad.output()).toMatch(/the join token was not accepted/);
    expect(bad.output()).not.toContain("tok1.wrong");

    writeFileSync(caFile, (await createTestPki("fabric.test")).rootPem);
    const untrusted = await spawnAgent(home, [
      "enroll",
      "--server",
      endpoints.enrollmentUrl,
      "--token",
      enrollment.token,
      "--ca-bundle",
      caFile,
    ]);
    expect(await untrusted.exited).toBe(EXIT.FAILURE);
    expect(untrusted.output()).toMatch(/cannot join through/);
  });
});

describe("fabric-agent run against the control plane", { timeout: 60_000 }, () => {
  it("applies verified snapshots, refuses bad ones, survives the router going away and resyncs", async () => {
    const { port, spec } = await webWorkload();
    const { home, paths } = await preparedHome({ pki, endpoints });
    const agent = await spawnAgent(home);
    agents.push(agent);
    await waitFor(
      "watch opened",
      () => router.watches.length > 0 && registry.heartbeats().length > 0,
      15_000,
    );
    router.push(signSnapshot(ids.router, snap(1n, { workloads: [{ spec, generation: 1n }] })));
    const web = await waitFor(
      "web healthy",
      () => workload(paths, "web")?.state === "HEALTHY" && workload(paths, "web"),
      15_000,
    );
    await waitFor("HEALTHY reported to the registry", () =>
      registry.statuses().some((s) => s.workloadId === "web" && s.state === WorkloadState.HEALTHY),
    );
    await waitFor("heartbeat with the snapshot version", () =>
      registry.heartbeats().some((h) => h.snapshotVersion === 1n),
    );

    // Tampered, rolled back, foreign-signed and registry-signed snapshots are all refused.
    const evil = nodeWorkload("evil", "setInterval(() => {}, 1000)");
    const tampered = signSnapshot(ids.router, snap(2n));
    tampered.snapshot = signSnapshot(
      ids.router,
      snap(2n, { workloads: [{ spec: evil, generation: 1n }] }),
    ).snapshot;
    const refusals = [
      tampered,
      signSnapshot(ids.router, snap(1n, { workloads: [{ spec: evil, generation: 1n }] })),
      signSnapshot(ids.foreignRouter, snap(3n, { workloads: [{ spec: evil, generation: 1n }] })),
      signSnapshot(ids.registry, snap(4n, { workloads: [{ spec: evil, generation: 1n }] })),
    ];
    for (const envelope of refusals) router.push(envelope, { current: false });
    await waitFor(
      "four refusals",
      () => (agent.output().match(/snapshot refused; keeping the last verified one/g) ?? []).length >= 4,
    );
    expect(agent.output()).toMatch(/signature does not match/);
    expect(agent.output()).toMatch(/version 1 is not newer than the applied version 1/);
    expect(agent.output()).toMatch(/chain does not lead to this node's CA bundle/);
    expect(agent.output()).toMatch(/signed by spiffe:\/\/fabric\.test\/service\/registry/);
    expect(status(paths)?.snapshot?.version).toBe("1");
    expect(status(paths)?.workloads.map((w) => w.id)).toEqual(["web"]);

    // The router goes away: the workload keeps running, nothing new starts.
    await router.stop();
    await waitFor("router down", () => status(paths)?.connections.router === false);
    await waitFor(
      "reconnect attempts",
      () => (agent.output().match(/router watch interrupted/g) ?? []).length >= 3,
      15_000,
    );
    expect(workload(paths, "web")).toMatchObject({ state: "HEALTHY", pid: web.pid, restarts: 0 });
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe("hello");

    // It comes back with a newer snapshot that drops the role: the agent resumes from version 1 and the
    // workload stops within two seconds of that snapshot arriving.
    router.current = signSnapshot(ids.router, snap(5n, { roles: [], workloads: [{ spec, generation: 1n }] }));
    const watchesBefore = router.watches.length;
    await router.start(routerPort);
    await waitFor("resumed watch", () => router.watches.length > watchesBefore, 30_000);
    expect(router.watches.at(-1)?.knownVersion).toBe(1n);
    await waitFor("version 5 applied", () => status(paths)?.snapshot?.version === "5", 5_000);
    await waitFor("web stopped", () => !processAlive(web.pid), 2_000);
    await waitFor("STOPPED reported", () =>
      registry.statuses().some((s) => s.workloadId === "web" && s.state === WorkloadState.STOPPED),
    );
    expect(status(paths)?.workloads).toEqual([]);
  });

  it("refuses a router snapshot older than the newest it has trusted, also after a restart that lost its snapshot", async () => {
    const { port, spec } = await webWorkload();
    const zombie = nodeWorkload("zombie", "setInterval(() => {}, 1000)");
    router.current = signSnapshot(ids.router, snap(5n, { workloads: [{ spec, generation: 1n }] }));
    const { home, paths } = await preparedHome({ pki, endpoints });
    const first = await spawnAgent(home);
    agents.push(first);
    await waitFor("version 5 applied", () => status(paths)?.snapshot?.version === "5", 15_000);
    expect(await first.stop()).toBe(EXIT.OK);

    // The snapshot file is lost; the router (or whoever answers in its name) replays version 3.
    rmSync(paths.snapshot);
    router.current = signSnapshot(
      ids.router,
      snap(3n, {
        workloads: [
          { spec, generation: 1n },
          { spec: zombie, generation: 1n },
        ],
      }),
    );
    const second = await spawnAgent(home);
    agents.push(second);
    await waitFor("version 3 refused", () =>
      /version 3 is older than version 5, the newest this node has trusted.*snapshot refused; keeping the last verified one/.test(
        second.output(),
      ),
    );
    expect(status(paths)?.workloads ?? []).toEqual([]);

    // A newer one is taken as usual.
    router.push(signSnapshot(ids.router, snap(6n, { workloads: [{ spec, generation: 1n }] })));
    await waitFor("web healthy from version 6", () => workload(paths, "web")?.state === "HEALTHY", 15_000);
    expect(status(paths)?.snapshot?.version).toBe("6");
    expect(status(paths)?.workloads.map((w) => w.id)).toEqual(["web"]);
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe("hello");
  });

  it("renews at two thirds of a short lifetime with a fresh key and moves its streams to the new certificate", async () => {
    // A 30-second certificate a third of the way through: renewal is due in about 10 s, expiry in 20 s
    // (room for a slow agent start on a busy machine).
    const now = Date.now();
    const shortLived = await pki.issue(
      { kind: "node", id: "n-1", cluster: "c1", grant: "relay-node" },
      { notBefore: new Date(now - 10_000), notAfter: new Date(now + 20_000) },
    );
    const { home, paths } = await preparedHome({ pki, endpoints, node: shortLived });
    const oldSerial = inspectCertificate(shortLived.certificatePem).serialHex;
    const oldTarget = readlinkSync(paths.identity);
    const agent = await spawnAgent(home);
    agents.push(agent);
    const renewal = await waitFor(
      "renewed",
      () => enrollment.renewals.find((r) => r.serial === oldSerial),
      30_000,
    );
    // Not before two thirds of the lifetime, less the 5% jitter.
    expect(renewal.at).toBeGreaterThanOrEqual(now - 10_000 + 20_000 - 1_500);
    const renewed = await waitFor("new identity on disk", () => {
      const creds = loadCurrentIdentity(paths);
      return inspectCertificate(creds.certificatePem).serialHex !== oldSerial && creds;
    });
    const newSerial = inspectCertificate(renewed.certificatePem).serialHex;
    expect(renewed.privateKeyPem).not.toBe(shortLived.privateKeyPem);
    expect(readlinkSync(paths.identity)).not.toBe(oldTarget);
    expect(existsSync(join(paths.home, oldTarget))).toBe(false);
    expect(statSync(join(paths.identity, "key.pem")).mode & 0o777).toBe(0o600);
    await waitFor("watch on the new certificate", () => router.watches.some((w) => w.serial === newSerial));
    await waitFor("session on the new certificate", () =>
      registry.received.some((r) => r.serial === newSerial),
    );
    // It outlives the first certificate.
    await waitFor("past the old expiry", () => Date.now() > now + 21_000, 25_000);
    expect(agent.process.exitCode).toBeNull();
    expect(agent.output()).toMatch(/node identity renewed/);
  });

  it("stops everything and exits for re-enrollment when its certificate is revoked", async () => {
    const { spec } = await webWorkload();
    const envelope = signSnapshot(ids.router, snap(1n, { workloads: [{ spec, generation: 1n }] }));
    router.current = envelope;
    const { home, paths, node } = await preparedHome({ pki, endpoints });
    const agent = await spawnAgent(home);
    const web = await waitFor(
      "web healthy",
      () => workload(paths, "web")?.state === "HEALTHY" && workload(paths, "web"),
      15_000,
    );
    await waitFor("session up", () => status(paths)?.connections.registry === true);
    const serialHex = inspectCertificate(node.certificatePem).serialHex;
    const notAfter = inspectCertificate(node.certificatePem).notAfter;
    for (const server of [router.server!, registry.server!]) server.revocations.add({ serialHex, notAfter });
    expect(await agent.exited).toBe(EXIT.REENROLL_REQUIRED);
    expect(agent.output()).toMatch(
      /the control plane refused this identity: .*revoked.*Re-enroll with: fabric-agent enroll --force/,
    );
    expect(processAlive(web.pid)).toBe(false);
    expect(status(paths)?.state).toBe("reenroll-required");

    // Restarted (say by a service manager), it refuses to run the persisted snapshot with that identity.
    const again = await spawnAgent(home);
    expect(await again.exited).toBe(EXIT.REENROLL_REQUIRED);
    expect(again.output()).toMatch(/revoked/);
    expect(readFileSync(paths.status, "utf8")).not.toMatch(/"HEALTHY"/);
  });

  it("follows directives: DRAIN stops workloads but keeps reporting, SHUTDOWN ends the agent", async () => {
    const { spec } = await webWorkload();
    router.current = signSnapshot(ids.router, snap(1n, { workloads: [{ spec, generation: 1n }] }));
    const { home, paths } = await preparedHome({ pki, endpoints });
    const agent = await spawnAgent(home);
    agents.push(agent);
    const web = await waitFor(
      "web healthy",
      () => workload(paths, "web")?.state === "HEALTHY" && workload(paths, "web"),
      15_000,
    );
    await waitFor("session up", () => status(paths)?.connections.registry === true);
    registry.directive(DirectiveKind.DRAIN, "maintenance");
    await waitFor("drained", () => status(paths)?.drained === true && !processAlive(web.pid));
    const beats = registry.heartbeats().length;
    await waitFor("still heartbeating", () => registry.heartbeats().length > beats + 1);
    expect(registry.heartbeats().at(-1)?.healthMessage).toMatch(/drained/);
    registry.directive(DirectiveKind.SHUTDOWN, "decommissioned");
    expect(await agent.exited).toBe(EXIT.REENROLL_REQUIRED);
    expect(agent.output()).toMatch(/the registry shut this node down: decommissioned/);
  });

  it("probes its peers' addresses and reports latency and loss", async () => {
    const open = await freePort();
    const listener = createServer().listen(open, "127.0.0.1");
    const closed = await freePort();
    router.current = signSnapshot(
      ids.router,
      snap(1n, {
        peers: [
          { nodeId: "n-2", tier: 1, addresses: [`127.0.0.1:${open}`] },
          { nodeId: "n-3", tier: 2, addresses: [`127.0.0.1:${closed}`] },
        ],
      }),
    );
    const { home } = await preparedHome({ pki, endpoints });
    const agent = await spawnAgent(home);
    agents.push(agent);
    try {
      const reachable = await waitFor(
        "probe of n-2",
        () => registry.probes().find((p) => p.peerNodeId === "n-2"),
        15_000,
      );
      expect(reachable.lossRatio).toBe(0);
      expect(reachable.samples).toBe(3);
      expect(reachable.latency).toBeDefined();
      const unreachable = await waitFor("probe of n-3", () =>
        registry.probes().find((p) => p.peerNodeId === "n-3"),
      );
      expect(unreachable.lossRatio).toBe(1);
      expect(unreachable.latency).toBeUndefined();
    } finally {
      listener.close();
    }
  });
});

function createHashHex(privateKeyPem: string): string {
  return createHash("sha256")
    .update(createPublicKey(privateKeyPem).export({ type: "spki", format: "der" }))
    .digest("hex");
}
