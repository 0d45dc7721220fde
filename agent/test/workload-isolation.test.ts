// What a native workload can reach of the node: never the agent's state directory and the node's private
// key in it. A real agent process runs the workloads of a persisted snapshot; one of them tries every way
// into the state directory it can think of, another's exec health probe tries to read the key.
import {
  chmodSync,
  chownSync,
  existsSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { ConfigError, type TlsCredentials } from "@fabric/platform";
import { createTestPki, freePort, type ChildService, type TestPki } from "@fabric/platform/testing";
import { MountSchema, RestartMode, WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { createLogger } from "@fabric/platform";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EXIT } from "../src/exit-codes.js";
import { mountRefusal } from "../src/host-paths.js";
import { persistSnapshot } from "../src/snapshot-store.js";
import { Supervisor } from "../src/supervisor/supervisor.js";
import { resolveWorkloadUser, type WorkloadUserSettings } from "../src/supervisor/workload-user.js";
import { preparedHome, spawnAgent, testWorkloadUser, workload } from "./fixtures/agent-home.js";
import { nodeWorkload, signSnapshot, snapshot } from "./fixtures/snapshots.js";
import { removeTempDirs, tempDir } from "./fixtures/temp-dirs.js";
import { waitFor } from "./fixtures/wait.js";

const isRoot = process.getuid?.() === 0;

let pki: TestPki;
let router: TlsCredentials;
let endpoints: { routerUrl: string; registryUrl: string; enrollmentUrl: string };
const agents: ChildService[] = [];

beforeAll(async () => {
  pki = await createTestPki("fabric.test");
  router = await pki.issue({ kind: "service", id: "router" });
  // Nothing listens: the agent runs from its persisted snapshot.
  endpoints = {
    routerUrl: `https://127.0.0.1:${await freePort()}`,
    registryUrl: `https://127.0.0.1:${await freePort()}`,
    enrollmentUrl: `https://127.0.0.1:${await freePort()}`,
  };
});

afterEach(async () => {
  for (const agent of agents.splice(0)) await agent.stop();
});

afterAll(removeTempDirs);

/** A node script printing one JSON line: who it runs as, and the error code of each attempt (or "read"). */
function snoopScript(targets: Record<string, string>): string {
  return [
    `const fs = require("node:fs");`,
    `const attempt = (f) => { try { f(); return "read"; } catch (e) { return e.code; } };`,
    `const targets = ${JSON.stringify(targets)};`,
    `const results = {};`,
    `for (const [name, path] of Object.entries(targets))`,
    `  results[name] = attempt(() => fs.statSync(path).isDirectory() ? fs.readdirSync(path) : fs.readFileSync(path));`,
    `console.log(JSON.stringify({ uid: process.getuid(), gid: process.getgid(), groups: process.getgroups(),`,
    `  home: process.env.HOME, cwd: process.cwd(), results }));`,
  ].join("\n");
}

describe("a native workload and the node's state", { timeout: 60_000 }, () => {
  it.skipIf(!isRoot)(
    "runs as the unprivileged workload user and cannot read the node key or the state directory (needs root, as in CI)",
    async () => {
      const { home, paths } = await preparedHome({ pki, endpoints });
      const keyPath = join(paths.identity, "key.pem");
      const expected = testWorkloadUser();
      if (expected.mode !== "separate") throw new Error("a root agent runs workloads as a separate user");
      const readKey = `require("node:fs").readFileSync(${JSON.stringify(keyPath)})`;
      const snoop = nodeWorkload(
        "snoop",
        snoopScript({
          key: keyPath,
          keyFile: realpathSync(keyPath), // past the identity link
          stateDir: home,
          identityDir: paths.identity,
          snapshot: paths.snapshot,
          nodeRecord: paths.node,
          // relative to its working directory, which sits beside the state directory
          viaParent: `../../${home.split("/").pop()}/identity/key.pem`,
        }),
        { restartPolicy: { mode: RestartMode.NEVER } },
      );
      const prober = nodeWorkload("prober", "setInterval(() => {}, 1000)", {
        healthCheck: {
          probe: { case: "exec", value: { command: [process.execPath, "-e", readKey] } },
          interval: durationFromMs(1_000),
          failureThreshold: 1,
        },
      });
      const inState = nodeWorkload("in-state", "setInterval(() => {}, 1000)", { workingDir: home });
      const mountsState = nodeWorkload("mounts-state", "setInterval(() => {}, 1000)", {
        mounts: [{ source: home, target: "state" }],
      });
      const envelope = signSnapshot(
        router,
        snapshot({
          nodeId: "n-1",
          clusterId: "c1",
          version: 3n,
          roles: ["relay-node"],
          workloads: [snoop, prober, inState, mountsState].map((spec) => ({ spec, generation: 1n })),
        }),
      );
      persistSnapshot(paths, envelope);
      chmodSync(home, 0o755); // loosened by hand: the agent makes it 0700 again before anything runs
      const agent = await spawnAgent(home);
      agents.push(agent);

      await waitFor("snoop done", () => workload(paths, "snoop")?.state === "STOPPED", 20_000);
      const printed = readFileSync(join(paths.logs, "snoop.log"), "utf8")
        .split("\n")
        .find((l) => l.startsWith("{"));
      const seen = JSON.parse(printed!) as {
        uid: number;
        gid: number;
        groups: number[];
        home: string;
        cwd: string;
        results: Record<string, string>;
      };
      expect(seen.results).toEqual({
        key: "EACCES",
        keyFile: "EACCES",
        stateDir: "EACCES",
        identityDir: "EACCES",
        snapshot: "EACCES",
        nodeRecord: "EACCES",
        viaParent: "EACCES",
      });
      expect(seen).toMatchObject({ uid: expected.uid, gid: expected.gid });
      expect(seen.groups).not.toContain(0); // root's supplementary groups are dropped too
      expect(seen.home).toBe(join(paths.workloads, "snoop"));
      expect(seen.cwd).toBe(join(paths.workloads, "snoop"));
      const own = statSync(join(paths.workloads, "snoop"));
      expect({ uid: own.uid, mode: own.mode & 0o777 }).toEqual({ uid: expected.uid, mode: 0o700 });
      expect(statSync(paths.workloads).mode & 0o777).toBe(0o711);
      const state = statSync(home);
      expect({ uid: state.uid, mode: state.mode & 0o777 }).toEqual({ uid: 0, mode: 0o700 });

      // The exec probe runs as the workload does: reading the key fails, so the workload is UNHEALTHY.
      const probed = await waitFor(
        "prober unhealthy",
        () => workload(paths, "prober")?.state === "UNHEALTHY" && workload(paths, "prober"),
      );
      expect(probed.message).toMatch(/exec probe exited with status 1/);

      // A working directory in the state directory, or a mount of it, is refused before anything runs.
      expect(workload(paths, "in-state")).toMatchObject({ state: "FAILED", pid: null });
      expect(workload(paths, "in-state")?.message).toMatch(/inside the agent's state directory; refused/);
      expect(workload(paths, "mounts-state")).toMatchObject({ state: "FAILED", pid: null });
      expect(workload(paths, "mounts-state")?.message).toMatch(/would expose .* to the workload; refused/);
    },
  );

  it.skipIf(!isRoot)(
    "enters its working directory and makes its mount links with its own rights, not root's (needs root)",
    async () => {
      const dir = tempDir("agent-rights-");
      const user = testWorkloadUser();
      if (user.mode !== "separate") throw new Error("a root agent runs workloads as a separate user");
      // Root's: a directory only root may enter, holding one anyone could look into once there.
      const rootOnly = join(dir, "root-only");
      const inner = join(rootOnly, "inner");
      mkdirSync(inner, { recursive: true, mode: 0o755 });
      chmodSync(rootOnly, 0o700);
      writeFileSync(join(inner, "note"), "root's note", { mode: 0o644 });
      const shared = join(dir, "shared");
      mkdirSync(shared, { mode: 0o755 });
      writeFileSync(join(shared, "file"), "shared content", { mode: 0o644 });
      chmodSync(dir, 0o755);
      // What an earlier run of "linker" left in its own directory: a link into root's directory.
      const workloadRoot = join(dir, "workloads");
      mkdirSync(join(workloadRoot, "linker"), { recursive: true });
      symlinkSync(rootOnly, join(workloadRoot, "linker", "sub"));
      lchownSync(join(workloadRoot, "linker", "sub"), user.uid, user.gid);

      const supervisor = new Supervisor({
        nodeId: "n-1",
        stateDir: join(dir, "state"),
        workloadRoot,
        workloadUser: user,
        logsDir: join(dir, "logs"),
        rotation: { maxBytes: 1_000_000, maxFiles: 3 },
        dockerPath: "docker",
        logger: createLogger({ service: "agent-test", level: "silent" }),
        onChange: () => {},
      });
      const once = { restartPolicy: { mode: RestartMode.NEVER } };
      const print = `console.log(require("node:fs").readFileSync(process.argv[1], "utf8"))`;
      try {
        supervisor.apply(
          snapshot({
            nodeId: "n-1",
            clusterId: "c1",
            version: 1n,
            roles: ["relay-node"],
            workloads: [
              nodeWorkload("visitor", print, { ...once, workingDir: inner }),
              nodeWorkload("mounter", print, { ...once, mounts: [{ source: shared, target: "data" }] }),
              nodeWorkload("linker", print, { ...once, mounts: [{ source: shared, target: "sub/planted" }] }),
            ].map((spec) => {
              spec.args.push(spec.id === "mounter" ? "data/file" : "note");
              return { spec, generation: 1n };
            }),
          }),
        );
        const view = (id: string) => supervisor.views().find((v) => v.id === id);
        const log = (id: string) => readFileSync(join(dir, "logs", `${id}.log`), "utf8");
        // The shell that enters the directory as the workload user is turned away: status 126.
        await waitFor("visitor failed", () => view("visitor")?.state === WorkloadState.FAILED);
        expect(view("visitor")?.lastExitCode).toBe(126);
        expect(log("visitor")).not.toContain("root's note");
        expect(log("visitor")).toMatch(/can't cd/);
        // A mount link in its own directory works...
        await waitFor("mounter done", () => view("mounter")?.state === WorkloadState.STOPPED);
        expect(log("mounter")).toContain("shared content");
        expect(lstatSync(join(workloadRoot, "mounter", "data")).uid).toBe(user.uid);
        // ...one through a link into root's directory is refused, and nothing lands there.
        await waitFor("linker refused", () => view("linker")?.state === WorkloadState.FAILED);
        expect(view("linker")?.message).toMatch(/cannot link mount target .*planted: EACCES/);
        expect(existsSync(join(rootOnly, "planted"))).toBe(false);
      } finally {
        await supervisor.close("test over");
      }
    },
  );

  it.skipIf(!isRoot)("refuses to run from a state directory someone else owns (needs root)", async () => {
    const { home } = await preparedHome({ pki, endpoints });
    chownSync(home, 65534, 65534);
    const agent = await spawnAgent(home);
    agents.push(agent);
    expect(await agent.exited).toBe(EXIT.FAILURE);
    expect(agent.output()).toMatch(
      /state directory: .* is owned by uid 65534, not by fabric-agent \(uid 0\)/,
    );
  });
});

describe("who native workloads run as", () => {
  const accounts = () => {
    const dir = tempDir("agent-accounts-");
    const passwd = join(dir, "passwd");
    const group = join(dir, "group");
    writeFileSync(
      passwd,
      "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    );
    writeFileSync(group, "root:x:0:\nnogroup:x:65534:\nworkers:x:4000:\n");
    return { passwd, group };
  };
  const withDedicatedUser = () => {
    const files = accounts();
    writeFileSync(files.passwd, "fabric-workload:x:998:997::/nonexistent:/usr/sbin/nologin\n", { flag: "a" });
    return files;
  };
  const settings = (init: Partial<WorkloadUserSettings> = {}): WorkloadUserSettings => ({
    insecureSameUserWorkloads: false,
    ...init,
  });
  const configError = (f: () => unknown): string => {
    try {
      f();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as Error).message;
    }
    throw new Error("accepted, but must be refused");
  };

  it("as root: the dedicated user where it exists, else nobody/nogroup, or the user and group set; never root", () => {
    expect(resolveWorkloadUser(settings(), 0, withDedicatedUser())).toEqual({
      mode: "separate",
      uid: 998,
      gid: 997,
      name: "fabric-workload",
    });
    expect(resolveWorkloadUser(settings(), 0, accounts())).toEqual({
      mode: "separate",
      uid: 65534,
      gid: 65534,
      name: "nobody",
    });
    expect(
      resolveWorkloadUser(settings({ workloadUser: "4242", workloadGroup: "workers" }), 0, accounts()),
    ).toMatchObject({ uid: 4242, gid: 4000 });
    // a numeric uid with no entry gets nogroup
    expect(resolveWorkloadUser(settings({ workloadUser: "4242" }), 0, accounts())).toMatchObject({
      uid: 4242,
      gid: 65534,
    });
    expect(configError(() => resolveWorkloadUser(settings({ workloadUser: "root" }), 0, accounts()))).toMatch(
      /workloadUser: "root" is root/,
    );
    expect(configError(() => resolveWorkloadUser(settings({ workloadUser: "0" }), 0, accounts()))).toMatch(
      /is root/,
    );
    expect(
      configError(() => resolveWorkloadUser(settings({ workloadGroup: "root" }), 0, accounts())),
    ).toMatch(/workloadGroup: the root group/);
    expect(
      configError(() => resolveWorkloadUser(settings({ workloadUser: "ghost" }), 0, accounts())),
    ).toMatch(/no user "ghost"/);
    // the developer setting would mean workloads as root
    expect(
      configError(() => resolveWorkloadUser(settings({ insecureSameUserWorkloads: true }), 0, accounts())),
    ).toMatch(/insecureSameUserWorkloads: fabric-agent runs as root/);
  });

  it("not root: native workloads are refused unless the developer setting allows them as the agent's user", () => {
    const refused = resolveWorkloadUser(settings(), 1000, accounts());
    expect(refused.mode).toBe("refused");
    expect(refused.mode === "refused" && refused.reason).toMatch(
      /runs as uid 1000, not root.*FABRIC_INSECURE_SAME_USER_WORKLOADS=true/,
    );
    expect(resolveWorkloadUser(settings({ insecureSameUserWorkloads: true }), 1000, accounts())).toEqual({
      mode: "same-user",
    });
    expect(
      configError(() => resolveWorkloadUser(settings({ workloadUser: "nobody" }), 1000, accounts())),
    ).toMatch(/cannot run workloads as another user/);
  });

  it("a supervisor of an agent that is not root starts no native workload and says why", async () => {
    const dir = tempDir("agent-refused-");
    const supervisor = new Supervisor({
      nodeId: "n-1",
      stateDir: join(dir, "state"),
      workloadRoot: join(dir, "workloads"),
      workloadUser: resolveWorkloadUser(settings(), 1000, accounts()),
      logsDir: join(dir, "logs"),
      rotation: { maxBytes: 1_000_000, maxFiles: 3 },
      dockerPath: "docker",
      logger: createLogger({ service: "agent-test", level: "silent" }),
      onChange: () => {},
    });
    try {
      supervisor.apply(
        snapshot({
          nodeId: "n-1",
          clusterId: "c1",
          version: 1n,
          roles: ["relay-node"],
          workloads: [{ spec: nodeWorkload("web", "setInterval(() => {}, 1000)"), generation: 1n }],
        }),
      );
      const refused = await waitFor("web unsupported", () => {
        const v = supervisor.views()[0];
        return v?.state === WorkloadState.UNSUPPORTED && v;
      });
      expect(refused.pid).toBeUndefined();
      expect(refused.message).toMatch(/cannot run native workloads as a separate user/);
    } finally {
      await supervisor.close("test over");
    }
  });
});

describe("mounts that would expose the node", () => {
  it("are refused however the source is spelled: through a link, to a path not made yet, or above it", () => {
    const dir = tempDir("agent-mounts-");
    const state = join(dir, "state");
    mkdirSync(state);
    symlinkSync(state, join(dir, "innocent"));
    const refused = (source: string) =>
      mountRefusal([create(MountSchema, { source, target: "/x" })], [state]);
    for (const source of [
      state,
      join(dir, "innocent"),
      join(dir, "innocent", "not-yet", "deeper"),
      join(dir, "other", "..", "state", "identity"),
      dir,
      "/",
      "/proc/1/root",
      "/run/docker.sock",
    ]) {
      expect(refused(source), source).toMatch(/would expose .* to the workload; refused/);
    }
    for (const source of [join(dir, "state-sibling"), join(dir, "..state"), "/srv/app"]) {
      expect(refused(source), source).toBeUndefined();
    }
  });
});
