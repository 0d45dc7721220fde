// Tenant binding of every id in an EnrollmentService request: for each RPC that names a cluster, token,
// join request, node, organization or developer, and each kind of caller, the call is allowed in the
// caller's scope and refused (PermissionDenied or NotFound) outside it, with nothing changed on refusal —
// not in enrollment's tables, not at the CA, not at the registry.
import { Code, type Client } from "@connectrpc/connect";
import type { TlsCredentials } from "@fabric/platform";
import type { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  codeOf,
  collect,
  joinNode,
  nodeKey,
  startEnrollmentUnderTest,
  storedState,
  type EnrollmentUnderTest,
} from "./fixtures/enrollment-under-test.js";

let t: EnrollmentUnderTest;

const CALLERS = [
  "platform-admin",
  "cluster-admin of A",
  "cluster-admin of B",
  "org-admin of X",
  "org-admin of Y",
  "node of A",
  "developer of X",
] as const;
type Caller = (typeof CALLERS)[number];
const callers = {} as Record<Caller, TlsCredentials>;

/** A node enrolled in each cluster (approved by a platform-admin), and a developer bound to X. */
let nodeOfA: { nodeId: string };
let nodeOfB: { nodeId: string };

beforeAll(async () => {
  t = await startEnrollmentUnderTest({
    FABRIC_ADDRESS_RATE_PER_SECOND: "1000",
    FABRIC_ADDRESS_BURST: "1000",
    FABRIC_CREDENTIAL_RATE_PER_SECOND: "1000",
    FABRIC_CREDENTIAL_BURST: "1000",
  });
  callers["platform-admin"] = t.platformAdmin;
  callers["cluster-admin of A"] = await t.clusterAdmin("a");
  callers["cluster-admin of B"] = await t.clusterAdmin("b");
  callers["org-admin of X"] = await t.orgAdmin("x");
  callers["org-admin of Y"] = await t.orgAdmin("y");
  callers["node of A"] = await t.pki.issue({ kind: "node", id: "n-a", cluster: "a" });
  callers["developer of X"] = await t.pki.issue({
    kind: "user",
    id: "dev-x",
    organization: "x",
    grant: "developer",
  });
  const enrolled = async (cluster: string) => {
    const node = await joinNode(t, cluster);
    await t.client(t.platformAdmin).approveJoinRequest({ joinRequestId: node.id });
    return collect(t, node);
  };
  nodeOfA = await enrolled("a");
  nodeOfB = await enrolled("b");
  await t.client(callers["org-admin of X"]).issueDeveloperPin({ developerId: "bound-to-x" });
  // As the registry's organization views say: X is served by cluster A, Y by B.
  t.peers.organizationClusters.set("x", ["a"]);
  t.peers.organizationClusters.set("y", ["b"]);
});
afterAll(async () => t?.close());

type Enrollment = Client<typeof EnrollmentService>;

interface Case {
  rpc: string;
  /** Who may make the call; everyone else is refused. */
  allowed: Caller[];
  /** Creates what the call names (fresh for each caller), and returns the call. */
  prepare(): Promise<(as: Enrollment) => Promise<unknown>>;
}

const admin = () => t.client(t.platformAdmin);
const tokenIn = async (clusterId: string) => (await admin().createJoinToken({ clusterId })).joinToken!.id;
const requestIn = async (clusterId: string) => (await joinNode(t, clusterId)).id;
let developers = 0;

const CASES: Case[] = [
  {
    rpc: "CreateJoinToken(cluster A)",
    allowed: ["platform-admin", "cluster-admin of A"],
    prepare: async () => (as) => as.createJoinToken({ clusterId: "a" }),
  },
  {
    rpc: "ListJoinTokens(cluster A)",
    allowed: ["platform-admin", "cluster-admin of A"],
    prepare: async () => (as) => as.listJoinTokens({ clusterId: "a" }),
  },
  {
    rpc: "RevokeJoinToken(token of A)",
    allowed: ["platform-admin", "cluster-admin of A"],
    prepare: async () => {
      const tokenId = await tokenIn("a");
      return (as) => as.revokeJoinToken({ tokenId });
    },
  },
  {
    rpc: "ListJoinRequests(cluster A)",
    allowed: ["platform-admin", "cluster-admin of A"],
    prepare: async () => (as) => as.listJoinRequests({ clusterId: "a" }),
  },
  {
    rpc: "GetJoinRequest(request of A)",
    allowed: ["platform-admin", "cluster-admin of A"],
    prepare: async () => {
      const joinRequestId = await requestIn("a");
      return (as) => as.getJoinRequest({ joinRequestId });
    },
  },
  {
    rpc: "ApproveJoinRequest(request of A)",
    allowed: ["platform-admin", "cluster-admin of A"],
    prepare: async () => {
      const joinRequestId = await requestIn("a");
      return (as) => as.approveJoinRequest({ joinRequestId });
    },
  },
  {
    rpc: "ApproveJoinRequest(request of A, node of B)",
    allowed: ["platform-admin"],
    prepare: async () => {
      const joinRequestId = await requestIn("a");
      return (as) => as.approveJoinRequest({ joinRequestId, nodeId: nodeOfB.nodeId });
    },
  },
  {
    rpc: "ApproveJoinRequest(request of B, node of A)",
    allowed: ["platform-admin"],
    prepare: async () => {
      const joinRequestId = await requestIn("b");
      return (as) => as.approveJoinRequest({ joinRequestId, nodeId: nodeOfA.nodeId });
    },
  },
  {
    rpc: "RejectJoinRequest(request of A)",
    allowed: ["platform-admin", "cluster-admin of A"],
    prepare: async () => {
      const joinRequestId = await requestIn("a");
      return (as) => as.rejectJoinRequest({ joinRequestId, reason: "not ours" });
    },
  },
  {
    rpc: "IssueDeveloperPin(developer bound to X)",
    allowed: ["platform-admin", "org-admin of X"],
    prepare: async () => (as) => as.issueDeveloperPin({ developerId: "bound-to-x" }),
  },
  {
    rpc: "IssueDeveloperPin(new developer, organization X)",
    allowed: ["platform-admin", "org-admin of X"],
    prepare: async () => {
      const developerId = `new-dev-${++developers}`;
      return (as) => as.issueDeveloperPin({ developerId, organizationId: "x" });
    },
  },
  {
    rpc: "IssueDeveloperPin(new developer, default cluster A)",
    allowed: ["platform-admin", "org-admin of X"],
    prepare: async () => {
      const developerId = `new-dev-${++developers}`;
      return (as) => as.issueDeveloperPin({ developerId, defaultClusterId: "a" });
    },
  },
  {
    rpc: "IssueDeveloperPin(new developer, default cluster B)",
    allowed: ["platform-admin", "org-admin of Y"],
    prepare: async () => {
      const developerId = `new-dev-${++developers}`;
      return (as) => as.issueDeveloperPin({ developerId, defaultClusterId: "b" });
    },
  },
];

/** What the stand-in CA and registry were asked to do. */
const peerEffects = () => [
  t.peers.signRequests.length,
  t.peers.registerCalls.length,
  t.peers.revokedSerials.length,
];

describe("every id an enrollment request names is checked against the caller's scope", () => {
  it.each(CASES)("$rpc", async ({ allowed, prepare }) => {
    for (const caller of CALLERS) {
      const call = await prepare();
      const before = [await storedState(t.pool), peerEffects()];
      const code = await codeOf(call(t.client(callers[caller])));
      if (allowed.includes(caller)) {
        expect(code, caller).toBe("ok");
        continue;
      }
      expect([Code.PermissionDenied, Code.NotFound], `${caller}: ${String(code)}`).toContain(code);
      expect([await storedState(t.pool), peerEffects()], caller).toEqual(before);
    }
  });

  it("binds an anonymous Join to its token's cluster", async () => {
    const { token } = await admin().createJoinToken({ clusterId: "a" });
    const before = [await storedState(t.pool), peerEffects()];
    const code = await codeOf(t.client().join({ token, csrPem: (await nodeKey()).csrPem, clusterId: "b" }));
    expect(code).toBe(Code.PermissionDenied);
    expect([await storedState(t.pool), peerEffects()]).toEqual(before);
  });
});
