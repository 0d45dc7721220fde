import { X509Certificate, verify } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { equals, fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  createRpcClient,
  inspectCertificate,
  normalizePem,
  saveIdentity,
  startService,
  verifyChain,
  type RpcServer,
  type TlsCredentials,
} from "@fabric/platform";
import { createTestDatabase, createTestPki, type TestDatabase, type TestPki } from "@fabric/platform/testing";
import {
  PeerTier,
  RouterService,
  SnapshotSchema,
  type SignedSnapshot,
  type WatchResponse,
} from "@fabric/proto/fabric/router/v1/router_pb.js";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { routerDefinition } from "../src/service.js";
import { SIGNATURE_ALGORITHM } from "../src/snapshot-signer.js";
import { Feed } from "./fixtures/feed.js";
import { StandInRegistry, startStandInCa } from "./fixtures/stand-ins.js";

const ROUTER_ID = "spiffe://fabric.test/service/router";
let pki: TestPki;
let db: TestDatabase;
let registry: StandInRegistry;
let ca: RpcServer;
let router: Awaited<ReturnType<typeof startService<typeof routerDefinition.settings>>>;
let routerCreds: TlsCredentials;
let dir: string;
let env: Record<string, string>;
const feed = new Feed();
const ids: Record<string, TlsCredentials> = {};

beforeAll(async () => {
  pki = await createTestPki("fabric.test");
  db = await createTestDatabase("router");
  for (let i = 0; i < 10; i++) feed.member(`n${i}`, "c1");
  feed.member("r1", "c1");
  feed.role("r1", "c1", "relay-node");
  feed.member("s1", "c1");
  feed.role("s1", "c1", "rdp-worker");
  feed.node("both", {});
  feed.membership("both", "c1");
  feed.membership("both", "c2");
  feed.member("c2-n", "c2");
  registry = new StandInRegistry(await pki.issue({ kind: "service", id: "registry" }));
  registry.push(...feed.events);
  await registry.start();
  ca = await startStandInCa(await pki.issue({ kind: "service", id: "ca" }));
  dir = mkdtempSync(join(tmpdir(), "router-"));
  routerCreds = await pki.issue({ kind: "service", id: "router" });
  saveIdentity(join(dir, "identity"), routerCreds);
  env = {
    FABRIC_TRUST_DOMAIN: "fabric.test",
    DATABASE_URL: db.url,
    FABRIC_IDENTITY_DIR: join(dir, "identity"),
    FABRIC_CA_URL: ca.grpcUrl,
    FABRIC_REGISTRY_URL: registry.url,
    FABRIC_GRPC_PORT: "0",
    FABRIC_HTTP_PORT: "0",
    FABRIC_LOG_LEVEL: "silent",
    FABRIC_DEBOUNCE_MS: "20",
  };
  router = await startService(routerDefinition, env);
  ids.s1 = await pki.issue({ kind: "node", id: "s1", cluster: "c1" });
  ids.n1 = await pki.issue({ kind: "node", id: "n1", cluster: "c1" });
  ids.both = await pki.issue({ kind: "node", id: "both", cluster: "c2" });
  ids.stranger = await pki.issue({ kind: "node", id: "stranger", cluster: "c1" });
  ids.user = await pki.issue({ kind: "user", id: "dev01" });
  ids.platformAdmin = await pki.issue({ kind: "admin", id: "alice", grant: "platform-admin" });
  ids.clusterAdmin = await pki.issue({ kind: "admin", id: "carl", grant: "cluster-admin", cluster: "c1" });
  ids.otherClusterAdmin = await pki.issue({
    kind: "admin",
    id: "cora",
    grant: "cluster-admin",
    cluster: "c2",
  });
  ids.orgAdmin = await pki.issue({ kind: "admin", id: "olga", grant: "org-admin", organization: "o1" });
  ids.registry = await pki.issue({ kind: "service", id: "registry" });
  await snapshotFor(ids.s1!); // the model is loaded
});

afterAll(async () => {
  await router?.close();
  await registry?.stop();
  await ca?.close();
  await db?.drop();
  rmSync(dir, { recursive: true, force: true });
});

const client = (creds: TlsCredentials, url = router.server.grpcUrl) =>
  createRpcClient(RouterService, {
    url,
    credentials: creds,
    expectServerId: ROUTER_ID,
    retries: 0,
    timeoutMs: 10_000,
  });

/** Opens a Watch; retries while the router is still loading the model. */
async function openWatch(
  creds: TlsCredentials,
  request: { knownVersion?: bigint; nodeId?: string; clusterId?: string } = {},
  url = router.server.grpcUrl,
) {
  for (let attempt = 0; ; attempt++) {
    const abort = new AbortController();
    const responses = client(creds, url).watch(request, { signal: abort.signal, timeoutMs: 0 });
    const stream = responses[Symbol.asyncIterator]();
    const first = stream.next();
    try {
      return { first: await first, stream, close: () => abort.abort() };
    } catch (err) {
      abort.abort();
      if (ConnectError.from(err).code !== Code.Unavailable || attempt > 100) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function snapshotFor(creds: TlsCredentials) {
  const { first, close } = await openWatch(creds);
  close();
  return signedOf(first);
}

function signedOf(res: IteratorResult<WatchResponse>): SignedSnapshot {
  if (res.done || !res.value.signedSnapshot) throw new Error("the stream ended without a snapshot");
  return res.value.signedSnapshot;
}

async function refusal(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call succeeded but should have been refused");
}

async function auditRows(): Promise<
  { action: string; outcome: string; actor_id: string; target_id: string }[]
> {
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  try {
    return (
      await c.query("SELECT action, outcome, actor_id, target_id FROM router.audit_events ORDER BY seq")
    ).rows;
  } finally {
    await c.end();
  }
}

describe("Watch", () => {
  it("sends a node its signed snapshot first, then a new version after a registry change", async () => {
    const { first, stream, close } = await openWatch(ids.s1!);
    const signed = signedOf(first);
    const snapshot = fromBinary(SnapshotSchema, signed.snapshot);
    expect(snapshot.nodeId).toBe("s1");
    expect(snapshot.clusterId).toBe("c1");
    expect(snapshot.roles).toEqual(["rdp-worker"]);
    expect(snapshot.workloads).toEqual([]);
    const next = stream.next();
    registry.push(feed.workload("w1", "c1", "rdp-worker"));
    const second = fromBinary(SnapshotSchema, signedOf(await next).snapshot);
    expect(second.version).toBeGreaterThan(snapshot.version);
    expect(second.version).toBe(registry.version);
    expect(second.workloads.map((w) => w.spec?.id)).toEqual(["w1"]);
    close();
  });

  it("signs with the router's identity: the signature verifies with node:crypto, and fails once tampered with", async () => {
    const signed = await snapshotFor(ids.n1!);
    expect(signed.signatureAlgorithm).toBe(SIGNATURE_ALGORITHM);
    const [leaf, ...intermediates] = signed.signerChainPem;
    expect(leaf).toBe(normalizePem(routerCreds.certificatePem));
    expect(verifyChain(leaf!, intermediates, pki.rootPem)).toBe(true);
    expect(inspectCertificate(leaf!).spiffeId).toBe(ROUTER_ID);
    const key = new X509Certificate(routerCreds.certificatePem).publicKey;
    const check = (bytes: Uint8Array, signature: Uint8Array) =>
      verify("sha256", bytes, { key, dsaEncoding: "der" }, signature);
    expect(check(signed.snapshot, signed.signature)).toBe(true);
    const tampered = Uint8Array.from(signed.snapshot);
    tampered[tampered.length - 20]! ^= 0x01;
    expect(check(tampered, signed.signature)).toBe(false);
    const badSignature = Uint8Array.from(signed.signature);
    badSignature[badSignature.length - 1]! ^= 0x01;
    expect(check(signed.snapshot, badSignature)).toBe(false);
    // a certificate other than the router's does not verify it either
    const other = new X509Certificate(ids.registry!.certificatePem).publicKey;
    expect(verify("sha256", signed.snapshot, { key: other, dsaEncoding: "der" }, signed.signature)).toBe(
      false,
    );
  });

  it("gives a node in two clusters the snapshot of its certificate's cluster only", async () => {
    const snapshot = fromBinary(SnapshotSchema, (await snapshotFor(ids.both!)).snapshot);
    expect(snapshot.clusterId).toBe("c2");
    expect(snapshot.peers.map((p) => p.nodeId)).toEqual(["c2-n"]);
  });

  it("refuses another node's snapshot and another cluster's, with PermissionDenied, and audits it", async () => {
    const other = await refusal(openWatch(ids.n1!, { nodeId: "s1" }));
    expect(other.code).toBe(Code.PermissionDenied);
    expect(other.rawMessage).toMatch(/may watch only its own snapshot/);
    const cluster = await refusal(openWatch(ids.n1!, { clusterId: "c2" }));
    expect(cluster.code).toBe(Code.PermissionDenied);
    expect(cluster.rawMessage).toMatch(/cluster "c1"/);
    // naming itself is fine
    expect(
      fromBinary(
        SnapshotSchema,
        signedOf((await openWatch(ids.n1!, { nodeId: "n1", clusterId: "c1" })).first).snapshot,
      ).nodeId,
    ).toBe("n1");
    expect(await auditRows()).toEqual(
      expect.arrayContaining([
        { action: "snapshot.watch", outcome: "refused", actor_id: "n1", target_id: "s1" },
        { action: "snapshot.watch", outcome: "refused", actor_id: "n1", target_id: "n1" },
      ]),
    );
  });

  it("refuses principals that are not nodes", async () => {
    for (const who of ["user", "platformAdmin", "clusterAdmin", "registry"]) {
      const err = await refusal(openWatch(ids[who]!));
      expect(err.code, who).toBe(Code.PermissionDenied);
      expect(err.rawMessage, who).toMatch(/RouterService\/Watch/);
    }
  });

  it("tells a node without a membership to retry later", async () => {
    const err = await refusal(openWatch(ids.stranger!));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toMatch(/no membership in cluster "c1"/);
  });
});

describe("Explain", () => {
  it("shows an admin every candidate with per-factor scores and tiers", async () => {
    const res = await client(ids.platformAdmin!).explain({ nodeId: "n1" });
    expect(res.clusterId).toBe("c1");
    expect(res.nodeClass).toBe("normal");
    expect([res.activeMin, res.activeTarget, res.warmTarget, res.coldTarget]).toEqual([3, 5, 4, 4]);
    expect(res.snapshotVersion).toBeGreaterThan(0n);
    const selected = res.candidates.filter((c) => c.tier !== PeerTier.UNSPECIFIED);
    expect(selected.length).toBeGreaterThanOrEqual(3);
    for (const c of res.candidates) {
      const s = c.scores!;
      for (const f of [
        s.latency,
        s.loss,
        s.load,
        s.region,
        s.roleSuitability,
        s.trust,
        s.recentFailures,
        s.diversity,
      ]) {
        expect(f).toBeGreaterThanOrEqual(0);
        expect(f).toBeLessThanOrEqual(1);
      }
      expect(s.total).toBeGreaterThan(0);
    }
    // the relay suits a normal node best
    expect(res.candidates.find((c) => c.nodeId === "r1")!.scores!.roleSuitability).toBe(1);
    expect(res.candidates.map((c) => c.nodeId)).not.toContain("n1");
  });

  it("lets a cluster-admin explain nodes of their cluster only", async () => {
    expect((await client(ids.clusterAdmin!).explain({ nodeId: "n1" })).clusterId).toBe("c1");
    const err = await refusal(client(ids.otherClusterAdmin!).explain({ nodeId: "n1", clusterId: "c1" }));
    expect(err.code).toBe(Code.PermissionDenied);
    expect(err.rawMessage).toMatch(/administers cluster "c2"/);
    // without a cluster, a cluster-admin is answered for their own cluster, where n1 is unknown
    expect((await refusal(client(ids.otherClusterAdmin!).explain({ nodeId: "n1" }))).code).toBe(
      Code.NotFound,
    );
    expect(await auditRows()).toEqual(
      expect.arrayContaining([
        { action: "router.explain", outcome: "refused", actor_id: "cora", target_id: "n1" },
      ]),
    );
  });

  it("refuses nodes, users and org-admins", async () => {
    for (const who of ["n1", "user", "orgAdmin"]) {
      expect((await refusal(client(ids[who]!).explain({ nodeId: "n1" }))).code, who).toBe(
        Code.PermissionDenied,
      );
    }
  });

  it("answers bad requests with precise codes", async () => {
    const admin = client(ids.platformAdmin!);
    expect((await refusal(admin.explain({}))).code).toBe(Code.InvalidArgument);
    expect((await refusal(admin.explain({ nodeId: "nope" }))).code).toBe(Code.NotFound);
    const ambiguous = await refusal(admin.explain({ nodeId: "both" }));
    expect(ambiguous.code).toBe(Code.InvalidArgument);
    expect(ambiguous.rawMessage).toMatch(/c1, c2; set cluster_id/);
    expect((await admin.explain({ nodeId: "both", clusterId: "c2" })).clusterId).toBe("c2");
    expect((await refusal(admin.explain({ nodeId: "n1", clusterId: "c2" }))).code).toBe(Code.NotFound);
  });
});

describe("registry feed", () => {
  it("resumes from its last version after the registry restarts, and relists when told", async () => {
    const { first, stream, close } = await openWatch(ids.s1!);
    const before = fromBinary(SnapshotSchema, signedOf(first).snapshot);
    const held = registry.version;
    const port = registry.port;
    await registry.stop();
    registry.push(feed.workload("w2", "c1", "rdp-worker")); // made while the router is cut off
    const next = stream.next();
    await registry.start(port);
    const resumed = fromBinary(SnapshotSchema, signedOf(await next).snapshot);
    expect(resumed.workloads.map((w) => w.spec?.id)).toContain("w2");
    expect(resumed.version).toBeGreaterThan(before.version);
    expect(registry.requests.at(-1)!.resumeFromVersion).toBe(held);

    // the registry lost the history: the router must take a full list, which also drops w1
    await registry.stop();
    registry.push(
      (() => {
        const e = feed.workload("w1", "c1", "rdp-worker");
        e.deleted = true;
        return e;
      })(),
    );
    registry.compact();
    const afterRelist = stream.next();
    await registry.start(port);
    const relisted = fromBinary(SnapshotSchema, signedOf(await afterRelist).snapshot);
    expect(relisted.workloads.map((w) => w.spec?.id)).toEqual(["w2"]);
    expect(registry.requests.at(-1)!.resumeFromVersion).toBe(resumed.version);
    close();
  });
});

describe("replicas", () => {
  it("agree on versions and content, each serving the agents connected to it", async () => {
    const replica = await startService(routerDefinition, env);
    try {
      const a = await openWatch(ids.s1!);
      const b = await openWatch(ids.s1!, {}, replica.server.grpcUrl);
      const comparable = (signed: SignedSnapshot) => {
        const snapshot = fromBinary(SnapshotSchema, signed.snapshot);
        snapshot.generatedAt = undefined;
        return snapshot;
      };
      expect(equals(SnapshotSchema, comparable(signedOf(a.first)), comparable(signedOf(b.first)))).toBe(true);
      const [nextA, nextB] = [a.stream.next(), b.stream.next()];
      registry.push(feed.workload("w-replicas", "c1", "rdp-worker"));
      const [va, vb] = [comparable(signedOf(await nextA)), comparable(signedOf(await nextB))];
      expect(va.version).toBe(registry.version);
      expect(equals(SnapshotSchema, va, vb)).toBe(true);
      a.close();
      b.close();
    } finally {
      await replica.close();
    }
  });
});

describe("restart", () => {
  it("never sends an older version after the router restarts", async () => {
    const before = fromBinary(SnapshotSchema, (await snapshotFor(ids.s1!)).snapshot).version;
    await router.close();
    registry.push(feed.node("n9", { load: 0.9 })); // the feed moves on while the router is down
    router = await startService(routerDefinition, env);
    const after = await openWatch(ids.s1!);
    expect(fromBinary(SnapshotSchema, signedOf(after.first).snapshot).version).toBeGreaterThanOrEqual(before);
    after.close();
    // an agent already holding the latest version gets nothing until something newer exists
    const known = registry.version;
    const abort = new AbortController();
    const stream = client(ids.s1!).watch({ knownVersion: known }, { signal: abort.signal, timeoutMs: 0 });
    const next = stream[Symbol.asyncIterator]().next();
    registry.push(feed.workload("w3", "c1", "rdp-worker"));
    const newer = fromBinary(SnapshotSchema, signedOf(await next).snapshot);
    expect(newer.version).toBeGreaterThan(known);
    expect(newer.workloads.map((w) => w.spec?.id)).toContain("w3");
    abort.abort();
  });
});
