import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { createLogger } from "@fabric/platform";
import { freePort } from "@fabric/platform/testing";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import {
  RestartMode,
  WorkloadSpecSchema,
  WorkloadState,
  type WorkloadSpec,
} from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { Supervisor } from "../src/supervisor/supervisor.js";
import type { WorkloadView } from "../src/supervisor/workload-runner.js";
import { testWorkloadUser } from "./fixtures/agent-home.js";
import { httpServerScript, nodeWorkload, snapshot } from "./fixtures/snapshots.js";
import { processAlive, waitFor } from "./fixtures/wait.js";
import { removeTempDirs, tempDir } from "./fixtures/temp-dirs.js";

afterAll(removeTempDirs);

const logger = createLogger({ service: "agent-test", level: "silent" });
let current: { supervisor: Supervisor; dir: string; changes: WorkloadView[] } | undefined;

afterEach(async () => {
  await current?.supervisor.close("test over");
  current = undefined;
});

function start(dockerPath = "docker") {
  const dir = tempDir("agent-sup-");
  const changes: WorkloadView[] = [];
  const supervisor = new Supervisor({
    nodeId: "n-1",
    stateDir: join(dir, "state"),
    workloadRoot: join(dir, "workloads"),
    workloadUser: testWorkloadUser(),
    logsDir: join(dir, "logs"),
    rotation: { maxBytes: 1_000_000, maxFiles: 3 },
    dockerPath,
    logger,
    onChange: (v) => changes.push(v),
  });
  current = { supervisor, dir, changes };
  return current;
}

const assign = (version: bigint, workloads: WorkloadSpec[], roles = ["relay-node"]) =>
  snapshot({
    nodeId: "n-1",
    clusterId: "c1",
    version,
    roles,
    workloads: workloads.map((spec) => ({ spec, generation: 1n })),
  });

const view = (s: Supervisor, id: string) => s.views().find((v) => v.id === id);

/**
 * A docker CLI stand-in recording every invocation in `calls`: `run` creates the container, `stop`/`rm`
 * remove it, `inspect` reports it.
 */
function scriptedDocker() {
  const dir = tempDir("agent-docker-");
  const calls = join(dir, "calls.log");
  const docker = join(dir, "docker");
  writeFileSync(
    docker,
    [
      "#!/bin/sh",
      `echo "$*" >> ${calls}`,
      'case "$1" in',
      "  info) echo 27.0.1 ;;",
      `  run) touch ${dir}/running; echo c0ffee ;;`,
      `  inspect) if [ -f ${dir}/running ]; then echo "running 0 4242"; else echo "exited 143 0"; fi ;;`,
      `  stop|rm) rm -f ${dir}/running ;;`,
      "  exec) exit 0 ;;",
      "esac",
    ].join("\n"),
    { mode: 0o755 },
  );
  return { docker, calls, lines: () => (existsSync(calls) ? readFileSync(calls, "utf8").split("\n") : []) };
}

/** Waits for the workload to be refused (FAILED before it ever ran) and returns the reason. */
async function refusal(s: Supervisor, id: string): Promise<string> {
  const failed = await waitFor(
    `${id} refused`,
    () => view(s, id)?.state === WorkloadState.FAILED && view(s, id),
  );
  expect(failed.pid).toBeUndefined();
  expect(failed.restarts).toBe(0);
  return failed.message;
}
const httpCheck = (port: number) => ({
  probe: { case: "http" as const, value: { port, path: "/healthz" } },
  interval: durationFromMs(1_000),
  timeout: durationFromMs(500),
});

describe("native workloads", { timeout: 60_000 }, () => {
  it("starts an authorized workload and reports it healthy through its HTTP check", async () => {
    const { supervisor, dir } = start();
    const port = await freePort();
    supervisor.apply(
      assign(1n, [nodeWorkload("web", httpServerScript(port), { healthCheck: httpCheck(port) })]),
    );
    const healthy = await waitFor(
      "web healthy",
      () => view(supervisor, "web")?.state === WorkloadState.HEALTHY && view(supervisor, "web"),
    );
    expect(healthy.health).toBe("healthy");
    expect(processAlive(healthy.pid)).toBe(true);
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe("hello");
    expect(readFileSync(join(dir, "logs", "web.log"), "utf8")).toMatch(/started, pid \d+[\s\S]*listening on/);
  });

  it("gives the workload its spec's environment and none of the agent's", async () => {
    const { supervisor, dir } = start();
    process.env.FABRIC_TEST_AGENT_SECRET = "must-not-leak";
    try {
      const script = `console.log(JSON.stringify({ mine: process.env.GREETING, id: process.env.FABRIC_WORKLOAD_ID, leaked: process.env.FABRIC_TEST_AGENT_SECRET ?? null, cwd: process.cwd() }))`;
      supervisor.apply(
        assign(1n, [
          nodeWorkload("envy", script, {
            env: { GREETING: "hi" },
            restartPolicy: { mode: RestartMode.NEVER },
          }),
        ]),
      );
      await waitFor("envy done", () => view(supervisor, "envy")?.state === WorkloadState.STOPPED);
      const printed = readFileSync(join(dir, "logs", "envy.log"), "utf8")
        .split("\n")
        .find((l) => l.startsWith("{"));
      expect(JSON.parse(printed!)).toEqual({
        mine: "hi",
        id: "envy",
        leaked: null,
        cwd: join(dir, "workloads", "envy"),
      });
    } finally {
      delete process.env.FABRIC_TEST_AGENT_SECRET;
    }
  });

  it("restarts a crashing workload with doubling backoff, then reports a crash loop", async () => {
    const { supervisor, dir, changes } = start();
    const spec = nodeWorkload("crashy", "process.exit(3)", {
      restartPolicy: {
        initialBackoff: durationFromMs(100),
        maxBackoff: durationFromMs(5_000),
        crashLoopThreshold: 4,
        crashLoopWindow: durationFromMs(60_000),
      },
    });
    supervisor.apply(assign(1n, [spec]));
    const looping = await waitFor(
      "crash loop",
      () => view(supervisor, "crashy")?.state === WorkloadState.CRASH_LOOP && view(supervisor, "crashy"),
    );
    expect(looping.restarts).toBe(4);
    expect(looping.lastExitCode).toBe(3);
    expect(looping.message).toMatch(/crash loop: 4 restarts; exited \(status 3\); restarting in 5\.0 s/);
    expect(
      changes.some((c) => c.state === WorkloadState.STARTING && /restarting in 0\.1 s/.test(c.message)),
    ).toBe(true);
    // The waits before restarts 1-3 were 100, 200 and 400 ms: starts are at least that far apart.
    const starts = readFileSync(join(dir, "logs", "crashy.log"), "utf8")
      .split("\n")
      .filter((l) => l.includes("started, pid"))
      .map((l) => Date.parse(l.split(" ")[0]!));
    expect(starts.length).toBe(4);
    const gaps = starts.slice(1).map((t, i) => t - starts[i]!);
    gaps.forEach((gap, i) => expect(gap, `gap ${i}`).toBeGreaterThanOrEqual(100 * 2 ** i - 5));
  });

  it("follows restart mode never: exit 0 ends STOPPED, a failure ends FAILED", async () => {
    const { supervisor } = start();
    const never = { restartPolicy: { mode: RestartMode.NEVER } };
    supervisor.apply(
      assign(1n, [
        nodeWorkload("ok", "process.exit(0)", never),
        nodeWorkload("bad", "process.exit(7)", never),
      ]),
    );
    await waitFor("ok stopped", () => view(supervisor, "ok")?.state === WorkloadState.STOPPED);
    const bad = await waitFor(
      "bad failed",
      () => view(supervisor, "bad")?.state === WorkloadState.FAILED && view(supervisor, "bad"),
    );
    expect(bad.lastExitCode).toBe(7);
    expect(bad.restarts).toBe(0);
  });

  it("fails a workload whose command does not exist, without retrying", async () => {
    const { supervisor } = start();
    const spec = nodeWorkload("ghost", "");
    spec.command = "/nonexistent/fabric-test-binary";
    supervisor.apply(assign(1n, [spec]));
    const failed = await waitFor(
      "ghost failed",
      () => view(supervisor, "ghost")?.state === WorkloadState.FAILED && view(supervisor, "ghost"),
    );
    expect(failed.message).toMatch(/cannot run \/nonexistent\/fabric-test-binary: not found/);
    expect(failed.restarts).toBe(0);
  });

  it("stops with SIGTERM, and SIGKILLs a workload that ignores it after the grace period", async () => {
    const { supervisor, dir } = start();
    const [polite, stubborn] = [await freePort(), await freePort()];
    supervisor.apply(
      assign(1n, [
        nodeWorkload("polite", httpServerScript(polite), { healthCheck: httpCheck(polite) }),
        nodeWorkload("stubborn", httpServerScript(stubborn, { ignoreSigterm: true }), {
          healthCheck: httpCheck(stubborn),
          stopGracePeriod: durationFromMs(700),
        }),
      ]),
    );
    await waitFor(
      "both healthy",
      () =>
        supervisor.views().every((v) => v.state === WorkloadState.HEALTHY) && supervisor.views().length === 2,
    );
    const pids = supervisor.views().map((v) => v.pid);
    supervisor.apply(assign(2n, []));
    await waitFor("both gone", () => pids.every((pid) => !processAlive(pid)), 5_000);
    expect(readFileSync(join(dir, "logs", "polite.log"), "utf8")).toMatch(/got SIGTERM, exiting/);
    const log = readFileSync(join(dir, "logs", "stubborn.log"), "utf8");
    expect(log).toMatch(/stopping \(no longer assigned to this node\)[\s\S]*got SIGTERM, ignoring it/);
    expect(supervisor.views()).toEqual([]);
  });

  it("stops a workload within two seconds of its role leaving the snapshot", async () => {
    const { supervisor, changes } = start();
    const port = await freePort();
    supervisor.apply(
      assign(1n, [nodeWorkload("web", httpServerScript(port), { healthCheck: httpCheck(port) })]),
    );
    const healthy = await waitFor(
      "web healthy",
      () => view(supervisor, "web")?.state === WorkloadState.HEALTHY && view(supervisor, "web"),
    );
    supervisor.apply(
      assign(2n, [nodeWorkload("web", httpServerScript(port), { healthCheck: httpCheck(port) })], []),
    );
    await waitFor("web stopped", () => !processAlive(healthy.pid), 2_000);
    await waitFor("STOPPED reported", () => changes.at(-1)?.state === WorkloadState.STOPPED);
    await expect(fetch(`http://127.0.0.1:${port}/`)).rejects.toThrow();
  });

  it("replaces a workload whose generation changed, waiting for the old instance to stop", async () => {
    const { supervisor } = start();
    const port = await freePort();
    const spec = nodeWorkload("web", httpServerScript(port), { healthCheck: httpCheck(port) });
    supervisor.apply(assign(1n, [spec]));
    const first = await waitFor(
      "v1 healthy",
      () => view(supervisor, "web")?.state === WorkloadState.HEALTHY && view(supervisor, "web"),
    );
    supervisor.apply(
      snapshot({
        nodeId: "n-1",
        clusterId: "c1",
        version: 2n,
        roles: ["relay-node"],
        workloads: [{ spec, generation: 2n }],
      }),
    );
    const second = await waitFor("v2 healthy", () => {
      const v = view(supervisor, "web");
      return v?.generation === 2n && v.state === WorkloadState.HEALTHY && v;
    });
    expect(second.pid).not.toBe(first.pid);
    expect(processAlive(first.pid)).toBe(false);
  });

  it("reports exec and tcp checks: failing exec → UNHEALTHY, open port → HEALTHY", async () => {
    const { supervisor } = start();
    const port = await freePort();
    supervisor.apply(
      assign(1n, [
        nodeWorkload("execy", "setInterval(() => {}, 1000)", {
          healthCheck: {
            probe: { case: "exec", value: { command: [process.execPath, "-e", "process.exit(1)"] } },
            interval: durationFromMs(1_000),
            failureThreshold: 1,
          },
        }),
        nodeWorkload("tcpy", httpServerScript(port), {
          healthCheck: { probe: { case: "tcp", value: { port } }, interval: durationFromMs(1_000) },
        }),
      ]),
    );
    const execy = await waitFor(
      "execy unhealthy",
      () => view(supervisor, "execy")?.state === WorkloadState.UNHEALTHY && view(supervisor, "execy"),
    );
    expect(execy.message).toMatch(/exec probe exited with status 1/);
    await waitFor("tcpy healthy", () => view(supervisor, "tcpy")?.state === WorkloadState.HEALTHY);
  });
});

describe("what the supervisor refuses to run", { timeout: 60_000 }, () => {
  it("starts nothing the snapshot does not authorize for this node", async () => {
    const { supervisor } = start();
    const refused = supervisor.apply(
      assign(1n, [
        nodeWorkload("other-role", "setInterval(() => {}, 1000)", { role: "entry-node" }),
        nodeWorkload("other-node", "setInterval(() => {}, 1000)", { nodeIds: ["n-2"] }),
        nodeWorkload("other-cluster", "setInterval(() => {}, 1000)", { clusterId: "c2" }),
      ]),
    );
    expect(refused.map((r) => `${r.id}: ${r.reason}`)).toEqual([
      'other-role: needs role "entry-node", which this node does not hold',
      "other-node: is placed on other nodes",
      'other-cluster: belongs to cluster "c2", not "c1"',
    ]);
    expect(supervisor.views()).toEqual([]);
  });

  it("drives containers through the docker CLI where an engine answers (a scripted docker CLI here)", async () => {
    const { docker, calls } = scriptedDocker();
    const { supervisor } = start(docker);
    const spec = nodeWorkload("boxed", "", {
      runtime: Runtime.CONTAINER,
      image: "registry.example/relay:1.2",
      env: { MODE: "edge" },
      healthCheck: {
        probe: { case: "exec", value: { command: ["/bin/relay", "--check"] } },
        interval: durationFromMs(1_000),
      },
      stopGracePeriod: durationFromMs(3_000),
    });
    spec.command = "/bin/relay";
    spec.args = ["--listen", ":7000"];
    supervisor.apply(assign(1n, [spec]));
    const healthy = await waitFor(
      "boxed healthy",
      () => view(supervisor, "boxed")?.state === WorkloadState.HEALTHY && view(supervisor, "boxed"),
    );
    expect(healthy.pid).toBe(4242);
    supervisor.apply(assign(2n, []));
    await waitFor("boxed stopped and removed", () => {
      const lines = readFileSync(calls, "utf8").split("\n");
      const stop = lines.indexOf("stop --time 3 fabric-boxed");
      return stop >= 0 && lines.lastIndexOf("rm --force fabric-boxed") > stop;
    });
    const log = readFileSync(calls, "utf8").split("\n");
    expect(log).toContain(
      "run --detach --name fabric-boxed --label fabric.workload-id=boxed --label fabric.generation=1 --network host --env MODE=edge --entrypoint /bin/relay registry.example/relay:1.2 --listen :7000",
    );
    expect(log).toContain("exec fabric-boxed /bin/relay --check");
    expect(log).toContain("stop --time 3 fabric-boxed");
    expect(log.indexOf("stop --time 3 fabric-boxed")).toBeLessThan(
      log.lastIndexOf("rm --force fabric-boxed"),
    );
  });

  it("runs nothing whose id is not a workload id: ids name the node's files and directories", () => {
    const { supervisor } = start();
    const refused = supervisor.apply(
      assign(
        1n,
        ["../../etc/cron.d/x", "Web", "a/b", ""].map((id) => nodeWorkload(id, "process.exit(0)")),
      ),
    );
    expect(refused.map((r) => r.reason)).toEqual([
      "its id is not a workload id",
      "its id is not a workload id",
      "its id is not a workload id",
      "a workload without an id",
    ]);
    expect(supervisor.views()).toEqual([]);
  });

  it("refuses a spec environment that changes how code loads or what it trusts, before any process", async () => {
    const { supervisor, dir } = start();
    const marker = join(dir, "ran");
    const script = `require("node:fs").writeFileSync(${JSON.stringify(marker)}, "ran")`;
    supervisor.apply(
      assign(1n, [
        nodeWorkload("preload", script, { env: { MODE: "x", LD_PRELOAD: "/tmp/evil.so" } }),
        nodeWorkload("options", script, { env: { NODE_OPTIONS: "--require /tmp/evil.js" } }),
        nodeWorkload("proxied", script, { env: { http_proxy: "http://evil:3128" } }),
        nodeWorkload("smuggled", script, { env: { "X=1 LD_PRELOAD": "/tmp/evil.so" } }),
      ]),
    );
    expect(await refusal(supervisor, "preload")).toBe(
      "spec.env: LD_PRELOAD changes how the process loads code or what it trusts; refused",
    );
    expect(await refusal(supervisor, "options")).toMatch(/^spec.env: NODE_OPTIONS changes how/);
    expect(await refusal(supervisor, "proxied")).toMatch(/^spec.env: http_proxy changes how/);
    expect(await refusal(supervisor, "smuggled")).toMatch(/is not a valid variable name/);
    expect(existsSync(marker)).toBe(false);
  });

  it("runs native workloads only in dev", async () => {
    const { supervisor } = start();
    supervisor.apply(
      assign(1n, [
        nodeWorkload("native-pro", "setInterval(() => {}, 1000)", { environment: Environment.PRO }),
      ]),
    );
    expect(await refusal(supervisor, "native-pro")).toMatch(/native workloads run only in dev/);
  });

  it("runs a pro container exactly as its pinned image was built, and refuses every override", async () => {
    const { docker, lines } = scriptedDocker();
    const { supervisor, dir } = start(docker);
    const image = `registry.example/relay@sha256:${"ab".repeat(32)}`;
    const container = (id: string, init: MessageInitShape<typeof WorkloadSpecSchema>) =>
      create(WorkloadSpecSchema, {
        id,
        clusterId: "c1",
        role: "relay-node",
        runtime: Runtime.CONTAINER,
        environment: Environment.DEV,
        image: "relay:1",
        ...init,
      });
    const pro = (id: string, init: MessageInitShape<typeof WorkloadSpecSchema> = {}) =>
      container(id, { environment: Environment.PRO, image, ...init });
    const dev = container;
    supervisor.apply(
      assign(1n, [
        pro("as-built", { env: { MODE: "edge" } }),
        pro("entrypoint", { command: "/bin/sh" }),
        pro("command", { args: ["sh", "-c", "id"] }),
        pro("workdir", { workingDir: "/tmp" }),
        pro("unpinned", { image: "registry.example/relay:1.2" }),
        pro("preload", { env: { LD_PRELOAD: "/evil.so" } }),
        dev("option", { image: "--privileged" }),
        dev("mount-state", { mounts: [{ source: join(dir, "state"), target: "/state" }] }),
        dev("mount-root", { mounts: [{ source: "/", target: "/host" }] }),
        dev("mount-docker", { mounts: [{ source: "/var/run/docker.sock", target: "/docker.sock" }] }),
        dev("mount-proc", { mounts: [{ source: "/proc", target: "/hostproc" }] }),
      ]),
    );
    await waitFor("as-built running", () => view(supervisor, "as-built")?.state === WorkloadState.RUNNING);
    expect(await refusal(supervisor, "entrypoint")).toMatch(
      /a pro image runs exactly as built; this spec overrides its command \(the entrypoint\)/,
    );
    expect(await refusal(supervisor, "command")).toMatch(/overrides its args \(the image's command\)/);
    expect(await refusal(supervisor, "workdir")).toMatch(/overrides its working_dir/);
    expect(await refusal(supervisor, "unpinned")).toMatch(/pro images must be pinned by digest/);
    expect(await refusal(supervisor, "preload")).toMatch(/LD_PRELOAD changes how/);
    expect(await refusal(supervisor, "option")).toMatch(/"--privileged" is not an image reference/);
    expect(await refusal(supervisor, "mount-state")).toMatch(/would expose .*state to the workload/);
    expect(await refusal(supervisor, "mount-root")).toMatch(/mount source \/ would expose/);
    expect(await refusal(supervisor, "mount-docker")).toMatch(/would expose \/(var\/)?run\/docker.sock/);
    expect(await refusal(supervisor, "mount-proc")).toMatch(/would expose \/proc/);
    // Only the spec that runs as built reached `docker run`, with nothing after the image.
    expect(lines().filter((l) => l.startsWith("run "))).toEqual([
      `run --detach --name fabric-as-built --label fabric.workload-id=as-built --label fabric.generation=1 --network host --env MODE=edge ${image}`,
    ]);
  });

  it("reports container workloads UNSUPPORTED where docker has no engine", async () => {
    for (const dockerPath of ["docker", "/nonexistent/docker"]) {
      const { supervisor } = start(dockerPath);
      supervisor.apply(
        assign(1n, [nodeWorkload("boxed", "", { runtime: Runtime.CONTAINER, image: "nginx:1.27" })]),
      );
      const unsupported = await waitFor(
        "boxed unsupported",
        () => view(supervisor, "boxed")?.state === WorkloadState.UNSUPPORTED && view(supervisor, "boxed"),
      );
      expect(unsupported.message).toMatch(/docker is not available on this node/);
      expect(unsupported.pid).toBeUndefined();
      await supervisor.close("next");
    }
  });
});
