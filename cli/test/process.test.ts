// The `fabric` executable as a user runs it: bin/fabric.mjs in a child process, talking mTLS to real
// platform RPC servers. Kept to what only a real process shows (start-up from any directory, exit codes,
// stdout/stderr); command behaviour in depth is in commands.test.ts.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runFabric, setUpFabric, writeFabricHome, type FabricSetup } from "./fixtures/run-fabric.js";

let fabric: FabricSetup;

beforeAll(async () => {
  fabric = await setUpFabric();
});

afterAll(async () => {
  await fabric?.close();
});

describe("the executable", () => {
  it("prints help with the commands, global flags and exit codes, from the repository root and elsewhere", async () => {
    const [root, elsewhere] = await Promise.all([
      runFabric(["--help"]),
      runFabric(["--help"], { cwd: tmpdir() }),
    ]);
    for (const run of [root, elsewhere]) {
      expect(run.code, run.stderr).toBe(0);
      for (const text of [
        "  ca ",
        "  enrollment ",
        "  registry ",
        "  router ",
        "  whoami ",
        "--context",
        "Exit codes:",
      ]) {
        expect(run.stdout).toContain(text);
      }
      expect(run.stdout).toMatch(/^ {2}3 +identity refused or missing/m);
    }
    expect(elsewhere.stdout).toBe(root.stdout);
  });

  it("runs through npx from the repository root", async () => {
    const run = await runFabric(["registry", "--help"], { command: ["npx", "--no", "fabric"] });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain("list-nodes");
  });

  it("calls ca get-trust-bundle over mTLS and prints JSON when stdout is not a terminal", async () => {
    const run = await runFabric(["ca", "get-trust-bundle"], { home: fabric.home });
    expect(run.code, run.stderr).toBe(0);
    const res = JSON.parse(run.stdout);
    expect(res.caBundlePem).toBe(fabric.pki.rootPem);
    expect(res.intermediatesPem).toEqual([fabric.pki.intermediatePem]);
    expect(res.trustDomain).toBe("fabric.test");
    expect(res.ocspUrls).toEqual([]); // every field present, defaults included
    expect(run.stderr).toBe("");
  });

  it("exits 3 on a refused call, with the code, the server's message and what to do on stderr", async () => {
    const run = await runFabric(["--context", "org", "ca", "get-trust-bundle"], { home: fabric.home });
    expect(run.code).toBe(3);
    expect(run.stderr).toContain(
      'error: PermissionDenied: admin "olga" (org-admin) may not call fabric.ca.v1.CaService/GetTrustBundle',
    );
    expect(run.stderr).toMatch(/^hint: .*`fabric whoami`/m);
    expect(run.stdout).toBe("");
  });

  it("exits 2 on a usage error", async () => {
    const run = await runFabric(["registry", "list-nodes", "--no-such-flag"], { home: fabric.home });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("--no-such-flag");
  });
});

describe("contexts and whoami", () => {
  it("context use switches the current context, context ls shows it, an unknown one is refused", async () => {
    const own = join(fabric.scratch, "contexts");
    writeFabricHome(own, fabric.pki.trustDomain, {
      admin: { identity: fabric.ids.admin, identityId: "alice", servers: fabric.services.urls },
      node: {
        identity: fabric.ids.node,
        identityId: "n-1",
        servers: { registry: fabric.services.urls.registry },
      },
    });
    const use = await runFabric(["context", "use", "node"], { home: own });
    expect(use.code, use.stderr).toBe(0);
    expect(readFileSync(join(own, "config.yaml"), "utf8")).toMatch(/^current-context: node$/m);
    const [ls, unknown] = await Promise.all([
      runFabric(["context", "ls"], { home: own }),
      runFabric(["context", "use", "nope"], { home: own }),
    ]);
    expect(ls.code, ls.stderr).toBe(0);
    const listed = JSON.parse(ls.stdout);
    expect(listed.currentContext).toBe("node");
    expect(listed.contexts).toEqual([
      expect.objectContaining({
        name: "admin",
        current: false,
        identity: "alice",
        trustDomain: "fabric.test",
      }),
      expect.objectContaining({
        name: "node",
        current: true,
        servers: { registry: fabric.services.urls.registry },
      }),
    ]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('no context named "nope"');
    expect(unknown.stderr).toContain("known contexts: admin, node");
  });

  it("whoami shows who the identity is and how long it lasts", async () => {
    const run = await runFabric(["whoami"], { home: fabric.home });
    expect(run.code, run.stderr).toBe(0);
    const me = JSON.parse(run.stdout);
    expect(me).toMatchObject({
      context: "admin",
      identityDir: join(fabric.home, "certs", "alice"),
      id: "alice",
      kind: "admin",
      spiffeId: "spiffe://fabric.test/admin/alice",
      trustDomain: "fabric.test",
      grant: "platform-admin",
      expired: false,
    });
    expect(me.daysLeft).toBeGreaterThan(29);
    expect(me.daysLeft).toBeLessThanOrEqual(30);
  });
});

describe("completion", () => {
  it("prints a bash script that completes services, methods, flags and enum values", async () => {
    const [bash, zsh] = await Promise.all([
      runFabric(["completion", "bash"]),
      runFabric(["completion", "zsh"]),
    ]);
    expect(bash.code, bash.stderr).toBe(0);
    const script = join(fabric.scratch, "fabric-completion.bash");
    writeFileSync(script, bash.stdout);
    const complete = (words: string[]) =>
      execFileSync(
        "bash",
        [
          "-c",
          `source ${script}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); ` +
            `COMP_CWORD=${words.length - 1}; _fabric; echo "\${COMPREPLY[*]}"`,
        ],
        { encoding: "utf8" },
      ).trim();
    expect(complete(["fabric", ""]).split(" ")).toEqual(
      expect.arrayContaining(["ca", "enrollment", "registry", "router", "context", "whoami", "completion"]),
    );
    expect(complete(["fabric", "registry", "list-org-w"])).toBe("list-org-workloads");
    expect(complete(["fabric", "-o", "json", "registry", "list-nodes", "--cl"])).toBe("--cluster-id");
    expect(complete(["fabric", "ca", "list-certificates", "--principal-kind", ""])).toBe(
      "node service user admin",
    );
    expect(complete(["fabric", "enrollment", "create-join-token", "--auto-approve", "--ma"])).toBe(
      "--max-uses",
    );
    expect(complete(["fabric", "--output", ""])).toBe("table json yaml");
    expect(complete(["fabric", "completion", ""])).toBe("bash zsh");
    expect(zsh.code, zsh.stderr).toBe(0);
    expect(zsh.stdout).toMatch(/^#compdef fabric\nautoload -U \+X bashcompinit && bashcompinit\n/);
    expect(zsh.stdout).toContain("complete -F _fabric fabric");
  });
});
