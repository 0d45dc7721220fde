// Server-supplied text is hostile until shown otherwise: an anonymous joiner chooses its join request's
// facts, a node its name and what it reports. Through `fabric join ls|show` and `fabric node ls|show` (and
// the generated commands' rendering), terminal control sequences — ESC[2J, OSC-8 links, C1 CSI — and bidi
// overrides reach the admin's terminal only as visible escapes, and a line break in a value cannot forge a
// table row; `-o json` and `-o yaml` stay exactly the data.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createLogger, createRpcServer, serve, type Policy, type RpcServer } from "@fabric/platform";
import { createTestPki } from "@fabric/platform/testing";
import {
  EnrollmentService,
  JoinRequestSchema,
  JoinRequestState,
} from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { MembershipState, NodeSchema, NodeState } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { runFabricHere as run, writeFabricHome } from "./fixtures/run-fabric.js";

const CLEAR = "\u001b[2J";
const OSC8 = "\u001b]8;;https://evil.example/\u0007click me\u001b]8;;\u0007";
const BIDI = "txt.\u202eexe";
const ISOLATE = "\u2066admin\u2069";
const C1_CSI = "\u009b31m";

const JOIN_REQUEST: MessageInitShape<typeof JoinRequestSchema> = {
  id: "jr-1",
  clusterId: "c1",
  tokenId: "tok1",
  nodeName: `edge${CLEAR}`,
  facts: {
    hostname: `host${OSC8}`,
    os: `linux${BIDI}`,
    osVersion: ISOLATE,
    arch: `x64${C1_CSI}`,
    agentVersion: "1.0.0\r\u001b[2Kapproved",
    addresses: ["10.0.0.1:7000\nFORGED   ROW   approved"],
    labels: { [`site${CLEAR}`]: BIDI },
  },
  capabilities: ["can_route_mesh"],
  requestedRoles: ["relay-node"],
  allowedRoles: ["relay-node"],
  publicKeySha256: "ab".repeat(32),
  peerAddress: "203.0.113.9:4444",
  state: JoinRequestState.PENDING,
  createdAt: timestampFromDate(new Date()),
};

const NODE: MessageInitShape<typeof NodeSchema> = {
  id: "n-1",
  name: `name${BIDI}`,
  state: NodeState.ACTIVE,
  facts: { hostname: `host${CLEAR}`, os: "linux", region: ISOLATE, addresses: [`10.0.0.2:7000${C1_CSI}`] },
  capabilities: ["can_route_mesh"],
  memberships: [
    { id: "m-1", nodeId: "n-1", clusterId: "c1", state: MembershipState.ACTIVE, roles: ["relay-node"] },
  ],
  lastHeartbeat: { agentVersion: `1.0${OSC8}`, healthMessage: CLEAR },
};

/** Characters that must never reach a terminal raw (the line feed is layout). */
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const RAW = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/;

let servers: RpcServer[] = [];
let scratch: string;
let home: string;

beforeAll(async () => {
  const pki = await createTestPki("fabric.test");
  const logger = createLogger({ service: "cli-test", level: "silent" });
  const platformAdmin = { adminRoles: ["platform-admin" as const] };
  const enrollment = serve(
    EnrollmentService,
    {
      listJoinRequests: () => ({ joinRequests: [JOIN_REQUEST] }),
      getJoinRequest: () => ({ joinRequest: JOIN_REQUEST }),
    },
    {
      ...Object.fromEntries(EnrollmentService.methods.map((m) => [m.localName, {}])),
      listJoinRequests: platformAdmin,
      getJoinRequest: platformAdmin,
    } as Policy<typeof EnrollmentService>,
  );
  const registry = serve(
    RegistryService,
    {
      getNode: () => ({ node: NODE }),
      listNodes: () => ({ nodes: [NODE] }),
      listRoleAssignments: () => ({
        roleAssignments: [
          { id: "ra-1", nodeId: "n-1", clusterId: "c1", role: "relay-node", organizationId: ISOLATE },
        ],
      }),
      listWorkloadStatus: () => ({
        statuses: [{ workloadId: "w-1", nodeId: "n-1", clusterId: "c1", message: `crashed${CLEAR}${BIDI}` }],
      }),
    },
    {
      ...Object.fromEntries(RegistryService.methods.map((m) => [m.localName, {}])),
      getNode: platformAdmin,
      listNodes: platformAdmin,
      listRoleAssignments: platformAdmin,
      listWorkloadStatus: platformAdmin,
    } as Policy<typeof RegistryService>,
  );
  const urls: Record<string, string> = {};
  for (const [name, registration] of [
    ["enrollment", enrollment],
    ["registry", registry],
  ] as const) {
    const server = await createRpcServer({
      name,
      trustDomain: pki.trustDomain,
      credentials: await pki.issue({ kind: "service", id: name }),
      grpcPort: 0,
      httpPort: 0,
      services: [registration],
      logger,
    });
    server.setReady(true);
    servers.push(server);
    urls[name] = server.grpcUrl;
  }
  scratch = mkdtempSync(join(tmpdir(), "fabric-hostile-"));
  home = join(scratch, "home");
  const admin = await pki.issue(
    { kind: "admin", id: "alice", grant: "platform-admin" },
    { notAfter: new Date(Date.now() + 30 * 86_400_000) },
  );
  writeFabricHome(home, pki.trustDomain, { admin: { identity: admin, identityId: "alice", servers: urls } });
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
  rmSync(scratch, { recursive: true, force: true });
});

async function table(args: string[]): Promise<string> {
  const res = await run([...args, "-o", "table"], { home });
  expect(res.code, res.stderr).toBe(0);
  expect(res.stdout).not.toMatch(RAW);
  return res.stdout;
}

describe("server-supplied text on a terminal", () => {
  it("join ls: escapes control and bidi characters, and a line break cannot forge a row", async () => {
    const out = await table(["join", "ls"]);
    expect(out.split("\n").filter(Boolean)).toHaveLength(2); // the header and the one request
    expect(out).toContain("edge\\x1b[2J");
    expect(out).toContain("host\\x1b]8;;https://evil.example/\\x07click me\\x1b]8;;\\x07");
    expect(out).toContain("linuxtxt.\\u202eexe");
    expect(out).toContain("x64\\x9b31m");
  });

  it("join show: every fact escaped, each on its own line", async () => {
    const out = await table(["join", "show", "jr-1"]);
    expect(out).toMatch(/^node name +edge\\x1b\[2J$/m);
    expect(out).toMatch(/^agent version +1\.0\.0\\r\\x1b\[2Kapproved$/m);
    expect(out).toMatch(/^addresses +10\.0\.0\.1:7000\\nFORGED {3}ROW {3}approved$/m);
    expect(out).not.toMatch(/^FORGED/m);
    expect(out).toContain("\\u2066admin\\u2069");
  });

  it("node ls and node show: names, facts, heartbeat, assignments and workload messages escaped", async () => {
    expect(await table(["node", "ls"])).toContain("nametxt.\\u202eexe");
    const out = await table(["node", "show", "n-1"]);
    expect(out).toMatch(/^name +nametxt\.\\u202eexe$/m);
    expect(out).toContain("host\\x1b[2J");
    expect(out).toContain("1.0\\x1b]8;;https://evil.example/\\x07click me\\x1b]8;;\\x07");
    expect(out).toContain("crashed\\x1b[2Jtxt.\\u202eexe");
    expect(out).toContain("\\u2066admin\\u2069");
  });

  it("the generated commands' tables and key/value lines", async () => {
    const out = await table(["registry", "get-node", "--node-id", "n-1"]);
    expect(out).toContain("node.name");
    expect(out).toContain("nametxt.\\u202eexe");
    expect(out).toContain("host\\x1b[2J");
    expect(await table(["enrollment", "list-join-requests"])).toContain("edge\\x1b[2J");
  });

  it("-o json and -o yaml are exactly the data, with the unsafe characters as escapes", async () => {
    for (const format of ["json", "yaml"]) {
      for (const args of [
        ["join", "show", "jr-1"],
        ["node", "show", "n-1"],
      ]) {
        const res = await run([...args, "-o", format], { home });
        expect(res.code, res.stderr).toBe(0);
        expect(res.stdout, `${args.join(" ")} -o ${format}`).not.toMatch(RAW);
        const doc = format === "json" ? JSON.parse(res.stdout) : parseYaml(res.stdout);
        if (args[0] === "join") expect(doc.facts.hostname).toBe(`host${OSC8}`);
        else expect(doc.node.name).toBe(`name${BIDI}`);
      }
    }
    const list = JSON.parse((await run(["join", "ls", "-o", "json"], { home })).stdout);
    expect(list.joinRequests[0].facts.addresses).toEqual(JOIN_REQUEST.facts!.addresses);
    expect(list.joinRequests[0].facts.labels).toEqual(JOIN_REQUEST.facts!.labels);
  });
});

// The fixtures above are contract messages: a typo in a field name would make the test vacuous.
it("feeds the fields it means to", () => {
  expect(create(JoinRequestSchema, JOIN_REQUEST).facts?.hostname).toContain(OSC8);
  expect(create(NodeSchema, NODE).lastHeartbeat?.agentVersion).toContain(OSC8);
});
