// Tenant binding of the router's RPCs, table-driven. Two clusters (A and B, and one node in both) and
// every kind of caller: Explain names a node and a cluster, Watch a node and a cluster. A caller gets an
// answer about its own side only; naming the other side's node or cluster is refused exactly as naming
// one that does not exist (PermissionDenied for a cluster, NotFound for a node), every PermissionDenied is
// audited, and no answer carries anything of the other cluster.
import { toJsonString } from "@bufbuild/protobuf";
import { Code, createContextValues, type HandlerContext } from "@connectrpc/connect";
import { allows, kPeer, toConnectError, type AuditInput, type Principal } from "@fabric/platform";
import { createTestPki } from "@fabric/platform/testing";
import {
  ExplainResponseSchema,
  type RouterService,
  type ExplainResponse,
  type WatchResponse,
} from "@fabric/proto/fabric/router/v1/router_pb.js";
import type { ServiceImpl } from "@connectrpc/connect";
import { beforeAll, describe, expect, it } from "vitest";
import { ROUTER_POLICY, routerService, type RouterRpcDeps } from "../src/router-rpc.js";
import { GONE, SnapshotHub } from "../src/snapshot-hub.js";
import { SnapshotSigner } from "../src/snapshot-signer.js";
import { Feed, engineOf } from "./fixtures/feed.js";

function principal(kind: Principal["kind"], id: string, extra: Partial<Principal> = {}): Principal {
  return {
    kind,
    id,
    spiffeId: `spiffe://fabric.test/${kind}/${id}`,
    trustDomain: "fabric.test",
    serialHex: "01",
    notBefore: new Date(0),
    notAfter: new Date(8.64e15),
    fingerprintSha256: "",
    ...extra,
  };
}

const admin = (id: string, adminRole: Principal["adminRole"], scope: Partial<Principal> = {}) =>
  principal("admin", id, { adminRole, grant: adminRole, ...scope });

/** The side of each caller: its cluster, a node of it, and the other side's. */
const SIDES = {
  A: { cluster: "ca", node: "na1" },
  B: { cluster: "cb", node: "nb1" },
};
const GHOST = { cluster: "ghost-c", node: "ghost-n" };
/** Ids only cluster B's data holds. */
const B_ONLY = ["nb1", "nb2", "nb-region"];

interface Caller {
  label: string;
  principal: Principal;
  own: ("A" | "B")[];
}

const CALLERS: Caller[] = [
  { label: "platform-admin", principal: admin("alice", "platform-admin"), own: ["A", "B"] },
  { label: "cluster-admin of A", principal: admin("carla", "cluster-admin", { cluster: "ca" }), own: ["A"] },
  { label: "cluster-admin of B", principal: admin("carlb", "cluster-admin", { cluster: "cb" }), own: ["B"] },
  { label: "org-admin of X", principal: admin("olgax", "org-admin", { organization: "ox" }), own: [] },
  { label: "org-admin of Y", principal: admin("olgay", "org-admin", { organization: "oy" }), own: [] },
  { label: "node of A", principal: principal("node", "na1", { cluster: "ca" }), own: [] },
  { label: "user", principal: principal("user", "dev01", { organization: "ox" }), own: [] },
  { label: "registry service", principal: principal("service", "registry"), own: [] },
];

let impl: ServiceImpl<typeof RouterService>;
const refusals: AuditInput[] = [];

beforeAll(async () => {
  const f = new Feed();
  f.member("na1", "ca");
  f.member("na2", "ca");
  f.role("na2", "ca", "relay-node");
  f.member("nb1", "cb", { region: "nb-region" });
  f.member("nb2", "cb", { region: "nb-region" });
  f.role("nb2", "cb", "relay-node");
  f.node("nab");
  f.membership("nab", "ca");
  f.membership("nab", "cb");
  const hub = new SnapshotHub();
  const credentials = await (await createTestPki("fabric.test")).issue({ kind: "service", id: "router" });
  const engine = engineOf(f.events, {
    onPublish: (key, snapshot) => hub.deliver(key, snapshot),
    onGone: (key) => hub.deliver(key, GONE),
  });
  engine.flush();
  impl = routerService({
    engine,
    hub,
    signer: new SnapshotSigner(() => credentials),
    recordRefusal: async (event) => void refusals.push(event),
    explainExcludedLimit: 100,
    audit: {} as RouterRpcDeps["audit"],
  }).implementation as unknown as ServiceImpl<typeof RouterService>;
});

function contextOf(p: Principal, signal = new AbortController().signal): HandlerContext {
  return {
    signal,
    values: createContextValues().set(kPeer, { state: "verified", principal: p }),
  } as unknown as HandlerContext;
}

interface Answer {
  code: Code | "ok";
  text: string;
}

async function explain(p: Principal, nodeId: string, clusterId: string): Promise<Answer> {
  try {
    const res = (await impl.explain({ nodeId, clusterId } as never, contextOf(p))) as ExplainResponse;
    return { code: "ok", text: toJsonString(ExplainResponseSchema, res) };
  } catch (err) {
    const e = toConnectError(err);
    return { code: e.code, text: e.rawMessage };
  }
}

/** The first message of a Watch, or how it failed. */
async function watch(p: Principal, nodeId: string, clusterId: string): Promise<Answer> {
  const abort = new AbortController();
  try {
    const stream = impl.watch({ nodeId, clusterId, knownVersion: 0n } as never, contextOf(p, abort.signal));
    const first = await (stream as AsyncIterable<WatchResponse>)[Symbol.asyncIterator]().next();
    return { code: "ok", text: first.done ? "" : "snapshot" };
  } catch (err) {
    const e = toConnectError(err);
    return { code: e.code, text: e.rawMessage };
  } finally {
    abort.abort();
  }
}

const shape = (a: Answer) => `${String(a.code)} ${a.text.replace(/"[^"]*"/g, '"…"')}`;

describe("Explain: the node and cluster it names are checked against the caller's scope", () => {
  for (const c of CALLERS) {
    it(`${c.label}`, async () => {
      const admitted = allows(ROUTER_POLICY.explain, c.principal);
      if (!admitted) {
        // The authorization table refuses it; the handler's scope check would too.
        const res = await explain(c.principal, SIDES.A.node, SIDES.A.cluster);
        expect(res.code).toBe(Code.PermissionDenied);
        return;
      }
      for (const side of c.own) {
        const own = SIDES[side];
        expect((await explain(c.principal, own.node, own.cluster)).code).toBe("ok");
        if (c.own.length === 1) expect((await explain(c.principal, own.node, "")).code).toBe("ok");
      }
      if (c.own.length !== 1) return;
      const own = SIDES[c.own[0]!];
      const other = SIDES[c.own[0] === "A" ? "B" : "A"];
      const before = refusals.length;
      // The other cluster, named: refused and audited, as a cluster that does not exist.
      const cluster = await explain(c.principal, own.node, other.cluster);
      expect(cluster.code).toBe(Code.PermissionDenied);
      expect(shape(cluster)).toBe(shape(await explain(c.principal, own.node, GHOST.cluster)));
      expect(refusals.length - before).toBe(2);
      expect(refusals.at(-2)).toMatchObject({
        action: "router.explain",
        outcome: "refused",
        actorId: c.principal.id,
      });
      // The other cluster's node, in the caller's cluster or in none: as a node that does not exist.
      for (const clusterId of [own.cluster, ""]) {
        const node = await explain(c.principal, other.node, clusterId);
        expect(node.code).toBe(Code.NotFound);
        expect(shape(node)).toBe(shape(await explain(c.principal, GHOST.node, clusterId)));
      }
      // A node in both clusters is explained in the caller's cluster only.
      const shared = await explain(c.principal, "nab", "");
      expect(shared.code).toBe("ok");
      expect(JSON.parse(shared.text).clusterId).toBe(own.cluster);
      if (c.own[0] === "A") for (const id of B_ONLY) expect(shared.text).not.toContain(id);
    });
  }
});

describe("Watch: a node watches its own snapshot in the cluster of its certificate only", () => {
  for (const c of CALLERS) {
    it(`${c.label}`, async () => {
      if (!allows(ROUTER_POLICY.watch, c.principal)) {
        // Refused by the table, and by the handler: no one but a node stands in for one.
        expect((await watch(c.principal, SIDES.A.node, SIDES.A.cluster)).code).toBe(Code.PermissionDenied);
        expect((await watch(c.principal, "", "")).code).toBe(Code.PermissionDenied);
        return;
      }
      expect(await watch(c.principal, "na1", "ca")).toEqual({ code: "ok", text: "snapshot" });
      for (const [nodeId, clusterId, ghostNode, ghostCluster] of [
        ["nb1", "ca", GHOST.node, "ca"],
        ["na1", "cb", "na1", GHOST.cluster],
        ["nab", "ca", GHOST.node, "ca"],
      ] as const) {
        const res = await watch(c.principal, nodeId, clusterId);
        expect(res.code, `${nodeId} in ${clusterId}`).toBe(Code.PermissionDenied);
        expect(shape(res)).toBe(shape(await watch(c.principal, ghostNode, ghostCluster)));
      }
    });
  }
});
