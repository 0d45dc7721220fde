// The router as a real process beside the real CA and registry (test/harness/fabric.ts): registry
// changes made through RegistryService RPCs reach a node's Watch as new signed versions.
import { X509Certificate, verify } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { inspectCertificate, verifyChain, type TlsCredentials } from "@fabric/platform";
import { Environment, PrincipalKind, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import {
  RouterService,
  SnapshotSchema,
  type SignedSnapshot,
  type Snapshot,
  type WatchResponse,
} from "@fabric/proto/fabric/router/v1/router_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFabric, type Fabric } from "../../../test/harness/fabric.js";

let fabric: Fabric;
const nodes: Record<string, TlsCredentials> = {};

beforeAll(async () => {
  fabric = await startFabric({
    services: ["ca", "registry", "router"],
    env: { router: { FABRIC_DEBOUNCE_MS: "20" } },
  });
  const admin = fabric.client(RegistryService, "registry");
  await admin.createCluster({ clusterId: "c1", name: "Cluster one", region: "eu-central" });
  // nodes are registered the way enrollment does it after approval
  const enrollment = fabric.client(RegistryService, "registry", fabric.serviceIdentity("enrollment"));
  for (const id of ["n1", "n2"]) {
    nodes[id] = await fabric.issue({ kind: "node", id, cluster: "c1" });
    await enrollment.registerNode({
      nodeId: id,
      nodeName: id,
      clusterId: "c1",
      facts: { hostname: id, os: "linux", region: "eu-central", addresses: [`${id}.test:7800`] },
      capabilities: ["can_run_rdp_worker"],
      certificateSerial: inspectCertificate(nodes[id]!.certificatePem).serialHex,
      joinRequestId: `join-${id}`,
      approvedBy: { kind: PrincipalKind.ADMIN, id: "platform-admin" },
    });
  }
}, 120_000);

afterAll(async () => {
  await fabric?.close();
});

/** A node's Watch stream; retries while the router is still catching up with the registry. */
async function watch(creds: TlsCredentials, request: { knownVersion?: bigint; nodeId?: string } = {}) {
  for (let attempt = 0; ; attempt++) {
    const abort = new AbortController();
    const responses = fabric
      .client(RouterService, "router", creds)
      .watch(request, { signal: abort.signal, timeoutMs: 0 });
    const stream = responses[Symbol.asyncIterator]();
    try {
      const first = await stream.next();
      return { first: signed(first), stream, close: () => abort.abort() };
    } catch (err) {
      abort.abort();
      const code = ConnectError.from(err).code;
      if (![Code.Unavailable, Code.FailedPrecondition].includes(code) || attempt > 150) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function signed(res: IteratorResult<WatchResponse>): SignedSnapshot {
  if (res.done || !res.value.signedSnapshot) throw new Error("the stream ended without a snapshot");
  return res.value.signedSnapshot;
}

const decode = (s: SignedSnapshot): Snapshot => fromBinary(SnapshotSchema, s.snapshot);

describe("router process", () => {
  it("streams a node its snapshot, then a new version for each registry change that concerns it", async () => {
    const { first, stream, close } = await watch(nodes.n1!);
    const initial = decode(first);
    expect([initial.nodeId, initial.clusterId]).toEqual(["n1", "c1"]);
    expect(initial.roles).toEqual([]);
    // signed by the router's service identity, chaining to the fabric's CA
    const [leaf, ...chain] = first.signerChainPem;
    const router = fabric.serviceIdentity("router");
    expect(verifyChain(leaf!, chain, router.caBundlePem)).toBe(true);
    expect(inspectCertificate(leaf!).spiffeId).toBe(`spiffe://${fabric.trustDomain}/service/router`);
    const key = new X509Certificate(router.certificatePem).publicKey;
    expect(verify("sha256", first.snapshot, { key, dsaEncoding: "der" }, first.signature)).toBe(true);

    const admin = fabric.client(RegistryService, "registry");
    await admin.assignRole({ nodeId: "n1", clusterId: "c1", role: "rdp-worker" });
    let snapshot = decode(signed(await stream.next()));
    while (snapshot.roles.length === 0) snapshot = decode(signed(await stream.next()));
    expect(snapshot.roles).toEqual(["rdp-worker"]);
    expect(snapshot.version).toBeGreaterThan(initial.version);

    await admin.putWorkload({
      spec: {
        id: "rdp-1",
        clusterId: "c1",
        role: "rdp-worker",
        runtime: Runtime.NATIVE,
        environment: Environment.DEV,
        command: "/usr/bin/true",
      },
    });
    let withWorkload = decode(signed(await stream.next()));
    while (withWorkload.workloads.length === 0) withWorkload = decode(signed(await stream.next()));
    expect(withWorkload.workloads.map((w) => w.spec?.id)).toEqual(["rdp-1"]);
    expect(withWorkload.version).toBeGreaterThan(snapshot.version);
    close();
  });

  it("refuses a node watching another node's snapshot", async () => {
    const err = await watch(nodes.n2!, { nodeId: "n1" }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.PermissionDenied);
  });

  it("explains a node's peers to an admin", async () => {
    const res = await fabric.client(RouterService, "router").explain({ nodeId: "n2" });
    expect(res.clusterId).toBe("c1");
    expect(res.nodeClass).toBe("normal");
  });

  it("keeps versions growing across a router restart", async () => {
    const before = decode((await watch(nodes.n1!)).first);
    await fabric.stop("router");
    await fabric.start("router");
    const { first, close } = await watch(nodes.n1!);
    expect(decode(first).version).toBeGreaterThanOrEqual(before.version);
    expect(decode(first).workloads.map((w) => w.spec?.id)).toEqual(["rdp-1"]);
    close();
  });
});
