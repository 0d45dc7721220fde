// Commands end to end through runCli (what bin/fabric.mjs runs), in this process to keep the file fast, but
// over real mTLS to platform RPC servers hosting fixture services: output formats, every kind of flag on
// the wire, streams, failures and the identity check before each command.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { inspectCertificate } from "@fabric/platform";
import { createTestPki, freePort } from "@fabric/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import {
  runFabricHere as run,
  setUpFabric,
  writeFabricHome,
  type FabricSetup,
} from "./fixtures/run-fabric.js";

const DAY = 86_400_000;
let fabric: FabricSetup;
let home: string;

beforeAll(async () => {
  fabric = await setUpFabric();
  home = fabric.home;
});

afterAll(async () => {
  await fabric?.close();
});

describe("output", () => {
  it("prints yaml with -o yaml", async () => {
    const res = await run(["ca", "list-certificates", "-o", "yaml"], { home });
    expect(res.code, res.stderr).toBe(0);
    const doc = parseYaml(res.stdout);
    expect(doc.certificates.map((c: { principalId: string }) => c.principalId)).toEqual(["n-1", "n-2"]);
    expect(doc.certificates[0].principalKind).toBe("PRINCIPAL_KIND_NODE");
    expect(doc.nextPageToken).toBe("page-2");
  });

  it("prints lists as tables with -o table: a column per set scalar field, enums by short name", async () => {
    const res = await run(["ca", "list-certificates", "-o", "table"], { home });
    expect(res.code, res.stderr).toBe(0);
    const lines = res.stdout.split("\n");
    expect(lines[0]).toMatch(
      /^SERIAL +PRINCIPAL_KIND +PRINCIPAL_ID +CLUSTER_ID +SPIFFE_ID +NOT_AFTER +STATUS$/,
    );
    expect(lines[1]).toMatch(
      /^0a1b +node +n-1 +c1 +spiffe:\/\/fabric\.test\/cluster\/c1\/node\/n-1 +2030-01-01T00:00:00Z +active$/,
    );
    expect(lines[2]).toMatch(/^0c2d .* revoked$/);
    expect(res.stdout).toMatch(/^next_page_token +page-2$/m);
  });

  it("prints a single message as key/value lines, multi-line values indented under their key", async () => {
    const res = await run(["ca", "get-trust-bundle", "-o", "table"], { home });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/^ca_bundle_pem:\n {2}-----BEGIN CERTIFICATE-----$/m);
    expect(res.stdout).toMatch(/^trust_domain +fabric\.test$/m);
    expect(res.stdout).toMatch(/^crl_urls +http:\/\/127\.0\.0\.1:7410\/crl$/m);
  });
});

describe("generated commands", () => {
  it("send every kind of flag as the server decodes it, over --json", async () => {
    const res = await run(
      [
        "enrollment",
        "create-join-token",
        "--cluster-id=c1",
        "--allowed-roles",
        "entry-node,relay-node",
        "--allowed-roles",
        "egress-node",
        "--ttl",
        "2h",
        "--auto-approve",
        "--json",
        '{"maxUses": 9, "description": "from json", "clusterId": "overridden"}',
        "--max-uses",
        "3",
      ],
      { home },
    );
    expect(res.code, res.stderr).toBe(0);
    expect(JSON.parse(res.stdout).joinToken).toMatchObject({
      clusterId: "c1",
      allowedRoles: ["entry-node", "relay-node", "egress-node"],
      maxUses: 3,
      autoApprove: true,
      description: "from json",
      expiresAt: "2030-01-01T02:00:00Z",
    });
  });

  it("print a server stream as it arrives, one JSON document per line", async () => {
    const res = await run(["ca", "watch-revocations", "--resume-from-version", "10"], { home });
    expect(res.code, res.stderr).toBe(0);
    expect(
      res.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l)),
    ).toEqual([
      { revoked: expect.objectContaining({ version: "11", serial: "s1" }) },
      { revoked: expect.objectContaining({ version: "12", serial: "s2" }) },
      { synced: { version: "2" } },
    ]);
    const lines = await run(["ca", "watch-revocations", "-o", "table"], { home });
    expect(lines.stdout.split("\n")[0]).toBe("revoked.version=1 revoked.serial=s1");
  });

  it("feed a bidi stream from NDJSON on stdin, after the message the flags make", async () => {
    const res = await run(
      [
        "--context",
        "node",
        "registry",
        "session",
        "--seq",
        "1",
        "--heartbeat",
        '{"cpuRatio": 0.5}',
        "-o",
        "table",
      ],
      { home, stdin: '{"seq": "2", "heartbeat": {"connectionCount": 4}}\n\n{"seq": 3, "probe": {}}\n' },
    );
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toBe("ack.acked_seq=1\nack.acked_seq=2\nack.acked_seq=3\n");
    const bad = await run(["--context", "node", "registry", "session"], {
      home,
      stdin: '{"seq": 1}\n{"pin": 1234}\n',
    });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("stdin line 2 is not a fabric.registry.v1.SessionRequest");
    expect(bad.stderr).not.toContain("1234");
  });

  it("show their help from the proto comments, flag by flag", async () => {
    const res = await run(["enrollment", "create-join-token", "--help"]);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/^Creates a join token scoped to one cluster\./);
    expect(res.stdout).toMatch(/ {2}--ttl <duration>\n {6}How long the token is valid from now/);
    expect(res.stdout).toMatch(/ {2}--auto-approve\n {6}Approve join requests/);
    expect(res.stdout).toContain("RPC fabric.enrollment.v1.EnrollmentService/CreateJoinToken.");
  });
});

describe("failures", () => {
  it("NotFound exits 4 with the server's message", async () => {
    const res = await run(["enrollment", "get-join-request", "--join-request-id", "jr-9"], { home });
    expect(res.code).toBe(4);
    expect(res.stderr).toContain('error: NotFound: join request "jr-9" does not exist');
    expect(res.stderr).toMatch(/^hint: check the id/m);
  });

  it("an unreachable service exits 5 and names the service and URL", async () => {
    const url = `https://127.0.0.1:${await freePort()}`;
    const res = await run(["ca", "get-trust-bundle", "--server", url], { home });
    expect(res.code).toBe(5);
    expect(res.stderr).toContain("error: Unavailable:");
    expect(res.stderr).toContain(`hint: could not get an answer from the ca service at ${url}`);
  });

  it("a server that is not the expected service, or not trusted, exits 5 and says which", async () => {
    const wrong = await run(["ca", "get-trust-bundle", "--server", fabric.services.urls.registry], { home });
    expect(wrong.code).toBe(5);
    expect(wrong.stderr).toContain(
      "spiffe://fabric.test/service/registry, expected spiffe://fabric.test/service/ca",
    );
    expect(wrong.stderr).toContain(
      `hint: the server at ${fabric.services.urls.registry} is not the ca service`,
    );
    // an identity from another Fabric does not trust these servers
    const other = await createTestPki("fabric.test");
    const dir = join(fabric.scratch, "other-fabric");
    const identity = await other.issue({ kind: "admin", id: "mallory", grant: "platform-admin" });
    writeFabricHome(dir, "fabric.test", {
      x: { identity, identityId: "mallory", servers: fabric.services.urls },
    });
    const untrusted = await run(["ca", "get-trust-bundle"], { home: dir });
    expect(untrusted.code).toBe(5);
    expect(untrusted.stderr).toMatch(
      /hint: the server at \S+ presented a certificate your identity's ca\.pem does not trust/,
    );
  });

  it("usage errors exit 2 and name the problem", async () => {
    const cases: [string[], string][] = [
      [["registry", "lst-nodes"], 'unknown command "registry lst-nodes"'],
      [
        ["ca", "list-certificates", "--principal-kind", "robot"],
        '--principal-kind: "robot" is not one of node',
      ],
      [["enrollment", "create-join-token", "--ttl", "soon"], '--ttl: "soon" is not a duration'],
      [["ca", "get-trust-bundle", "extra"], "takes no arguments, only flags (got 1)"],
      [["ca", "get-trust-bundle", "--server", "http://x:1"], "--server must be an https:// URL"],
      [["whoami", "--server", "https://x:1"], "--server does not apply to `fabric whoami`"],
      [["ca", "get-trust-bundle", "-o", "xml"], "-o/--output must be one of table, json, yaml"],
      [["ca", "get-trust-bundle", "--timeout", "0s"], "--timeout must be a positive duration"],
      [["--context", "nope", "whoami"], 'no context named "nope"'],
    ];
    for (const [args, message] of cases) {
      const res = await run(args, { home });
      expect(res.code, args.join(" ")).toBe(2);
      expect(res.stderr, args.join(" ")).toContain(message);
    }
  });

  it("a missing identity exits 3 and says where to get one", async () => {
    const empty = join(fabric.scratch, "empty-home");
    const res = await run(["ca", "get-trust-bundle", "--server", fabric.services.urls.ca], { home: empty });
    expect(res.code).toBe(3);
    expect(res.stderr).toContain("no identity to call with");
    expect(res.stderr).toContain("fabric dev init");
  });
});

describe("contexts", () => {
  it("context set creates a context (the first becomes current) and updates only what it is given", async () => {
    const own = join(fabric.scratch, "set-home");
    const bare = await run(["context", "set", "bare"], { home: own });
    expect(bare.code, bare.stderr).toBe(0);
    const created = await run(
      [
        "context",
        "set",
        "prod",
        "--trust-domain",
        "fabric.test",
        "--identity-id",
        "alice",
        "--ca-url",
        "https://ca:7400",
      ],
      { home: own },
    );
    expect(created.code, created.stderr).toBe(0);
    await run(["context", "set", "prod", "--registry-url", "https://registry:7402"], { home: own });
    const ls = JSON.parse((await run(["context", "ls"], { home: own })).stdout);
    expect(ls).toEqual({
      currentContext: "bare",
      contexts: [
        { name: "bare", current: true, trustDomain: "", identity: "", identityDir: "", servers: {} },
        {
          name: "prod",
          current: false,
          trustDomain: "fabric.test",
          identity: "alice",
          identityDir: join(own, "certs", "alice"),
          servers: { ca: "https://ca:7400", registry: "https://registry:7402" },
        },
      ],
    });
    const bad = await run(["context", "set", "prod", "--ca-url", "http://ca:7400"], { home: own });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("must be an https:// URL");
  });
});

describe("the identity check before every command", () => {
  /** A FABRIC_HOME whose one context uses a developer identity with the given time left. */
  async function developerHome(
    name: string,
    leftMs: number,
    servers: Record<string, string> = fabric.services.urls,
  ) {
    const dir = join(fabric.scratch, name);
    const identity = await fabric.pki.issue(
      { kind: "user", id: name },
      { notBefore: new Date(Date.now() - 30 * DAY), notAfter: new Date(Date.now() + leftMs) },
    );
    writeFabricHome(dir, fabric.pki.trustDomain, { dev: { identity, identityId: name, servers } });
    const certs = join(dir, "certs", name);
    return { dir, identity, certFile: join(certs, "cert.pem"), keyFile: join(certs, "key.pem") };
  }

  it("warns under 14 days left and still runs the command", async () => {
    const dev = await developerHome("dev-warn", 10 * DAY);
    const res = await run(["ca", "get-trust-bundle"], { home: dev.dir });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/^warning: your identity user "dev-warn" expires in 10\.0 days/);
    expect(JSON.parse(res.stdout).trustDomain).toBe("fabric.test");
    expect(readFileSync(dev.certFile, "utf8")).toBe(dev.identity.certificatePem);
  });

  it("renews under 3 days left with a new key through EnrollmentService.Renew, then runs the command", async () => {
    const dev = await developerHome("dev-renew", 2 * DAY);
    const res = await run(["ca", "get-trust-bundle"], { home: dev.dir });
    expect(res.code, res.stderr).toBe(0);
    expect(JSON.parse(res.stdout).trustDomain).toBe("fabric.test");
    const facts = inspectCertificate(readFileSync(dev.certFile, "utf8"));
    expect(res.stderr).toContain(
      `renewed identity user "dev-renew": new certificate ${facts.serialHex} valid until`,
    );
    expect(fabric.services.renewed).toContain(facts.serialHex);
    expect(facts.spiffeId).toBe("spiffe://fabric.test/user/dev-renew");
    expect(facts.notAfter.getTime() - Date.now()).toBeGreaterThan(29 * DAY);
    expect(readFileSync(dev.keyFile, "utf8")).not.toBe(dev.identity.privateKeyPem);
    // the next command finds nothing to do
    const again = await run(["whoami"], { home: dev.dir });
    expect(again.stderr).toBe("");
    expect(JSON.parse(again.stdout).serial).toBe(facts.serialHex);
  });

  it("blocks an expired identity with the exact re-onboarding command, and never tries to renew it", async () => {
    const dev = await developerHome("dev-expired", -DAY);
    const renewals = fabric.services.renewed.length;
    const res = await run(["ca", "get-trust-bundle"], { home: dev.dir });
    expect(res.code).toBe(3);
    expect(res.stderr).toContain('error: your identity user "dev-expired" expired at');
    expect(res.stderr).toContain(
      `hint: re-onboard: fabric dev init --dev-id dev-expired --server ${fabric.services.urls.enrollment} --pin <PIN from your admin>`,
    );
    expect(res.stdout).toBe("");
    expect(fabric.services.renewed.length).toBe(renewals);
    expect(readFileSync(dev.certFile, "utf8")).toBe(dev.identity.certificatePem);
    // whoami still reports it, so the user can see what happened
    const whoami = await run(["whoami"], { home: dev.dir });
    expect(whoami.code).toBe(0);
    expect(JSON.parse(whoami.stdout)).toMatchObject({ id: "dev-expired", expired: true });
    expect(whoami.stderr).toContain("fabric dev init --dev-id dev-expired");
  });

  it("keeps going with a warning when renewal fails before expiry", async () => {
    const enrollment = `https://127.0.0.1:${await freePort()}`;
    const dev = await developerHome("dev-norenew", 2 * DAY, { ...fabric.services.urls, enrollment });
    const res = await run(["ca", "get-trust-bundle"], { home: dev.dir });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/^warning: automatic renewal of user "dev-norenew" failed: Unavailable: /);
    expect(res.stderr).toContain("the next command tries again");
    expect(readFileSync(dev.certFile, "utf8")).toBe(dev.identity.certificatePem);
  });

  it("takes its thresholds from FABRIC_CLI_WARN_DAYS and FABRIC_CLI_RENEW_DAYS", async () => {
    const quiet = await developerHome("dev-quiet", 10 * DAY);
    const eager = await developerHome("dev-eager", 10 * DAY);
    const q = await run(["ca", "get-trust-bundle"], { home: quiet.dir, env: { FABRIC_CLI_WARN_DAYS: "5" } });
    expect(q.code, q.stderr).toBe(0);
    expect(q.stderr).toBe("");
    const e = await run(["ca", "get-trust-bundle"], {
      home: eager.dir,
      env: { FABRIC_CLI_RENEW_DAYS: "20" },
    });
    expect(e.code, e.stderr).toBe(0);
    expect(e.stderr).toContain('renewed identity user "dev-eager"');
    const bad = await run(["whoami"], { home: quiet.dir, env: { FABRIC_CLI_RENEW_DAYS: "soon" } });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("FABRIC_CLI_RENEW_DAYS");
  });

  it("renews a node's identity the same way, keeping its cluster", async () => {
    const dir = join(fabric.scratch, "node-renew");
    const identity = await fabric.pki.issue(
      { kind: "node", id: "n-7", cluster: "c9" },
      { notAfter: new Date(Date.now() + DAY) },
    );
    writeFabricHome(dir, fabric.pki.trustDomain, {
      n: { identity, identityId: "n-7", servers: fabric.services.urls },
    });
    const res = await run(["whoami"], { home: dir });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toContain('renewed identity node "n-7"');
    expect(JSON.parse(res.stdout)).toMatchObject({
      spiffeId: "spiffe://fabric.test/cluster/c9/node/n-7",
      cluster: "c9",
      expired: false,
    });
  });
});
