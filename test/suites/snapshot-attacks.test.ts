// Attacks on the snapshots a node applies, starting from real ones: the router runs as a process with
// its real identity and streams signed snapshots over Watch; each is then tampered with, replayed, rolled
// back, re-signed by identities that are not this fabric's router, or handed to the wrong node, and the
// agent's verifier (agent/src/snapshot-verifier.ts) must refuse every one.
import { sign } from "node:crypto";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type TlsCredentials } from "@fabric/platform";
import { createTestPki } from "@fabric/platform/testing";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import {
  RouterService,
  SignedSnapshotSchema,
  SnapshotSchema,
  type SignedSnapshot,
} from "@fabric/proto/fabric/router/v1/router_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  SnapshotRefused,
  verifySignedSnapshot,
  type VerifierIdentity,
} from "../../agent/src/snapshot-verifier.js";
import { startFabric, type Fabric } from "../harness/fabric.js";
import { clientAs } from "./support/callers.js";
import { forgeIdentity } from "./support/forged.js";

let fabric: Fabric;
let me: VerifierIdentity;
/** Two successive real snapshots of n-1, and one of n-2. */
let first: SignedSnapshot;
let second: SignedSnapshot;
let otherNodes: SignedSnapshot;
let node: TlsCredentials;

beforeAll(async () => {
  fabric = await startFabric({ services: ["ca", "registry", "router"] });
  const registry = fabric.client(RegistryService, "registry");
  await registry.createCluster({ clusterId: "c1", name: "Cluster one" });
  const asEnrollment = fabric.client(RegistryService, "registry", fabric.serviceIdentity("enrollment"));
  for (const id of ["n-1", "n-2"]) {
    await asEnrollment.registerNode({
      nodeId: id,
      clusterId: "c1",
      capabilities: ["can_route_mesh"],
      grantedRoles: ["relay-node"],
      joinRequestId: `jr-${id}`,
    });
  }
  node = await fabric.issue({ kind: "node", id: "n-1", cluster: "c1", grant: "relay-node" });
  const other = await fabric.issue({ kind: "node", id: "n-2", cluster: "c1", grant: "relay-node" });
  me = { trustDomain: fabric.trustDomain, nodeId: "n-1", clusterId: "c1", caBundlePem: node.caBundlePem };

  const watch = clientAs(fabric, RouterService, "router", node).watch({}, { timeoutMs: 30_000 });
  const stream = watch[Symbol.asyncIterator]();
  first = (await stream.next()).value!.signedSnapshot!;
  await registry.putWorkload({
    spec: {
      id: "w-1",
      clusterId: "c1",
      role: "relay-node",
      runtime: Runtime.NATIVE,
      environment: Environment.DEV,
      command: "/bin/true",
    },
  });
  second = (await stream.next()).value!.signedSnapshot!;
  await stream.return?.();
  const otherWatch = clientAs(fabric, RouterService, "router", other).watch({}, { timeoutMs: 30_000 });
  for await (const res of otherWatch) {
    otherNodes = res.signedSnapshot!;
    break;
  }
}, 180_000);

afterAll(async () => {
  await fabric?.close();
});

const versionOf = (s: SignedSnapshot) => fromBinary(SnapshotSchema, s.snapshot).version;

/** The envelope's snapshot bytes signed again by `signer`, presenting `signer`'s chain. */
function resign(envelope: SignedSnapshot, signer: TlsCredentials, bytes = envelope.snapshot): SignedSnapshot {
  return create(SignedSnapshotSchema, {
    snapshot: bytes,
    signature: sign("sha256", bytes, { key: signer.privateKeyPem, dsaEncoding: "der" }),
    signatureAlgorithm: envelope.signatureAlgorithm,
    signerChainPem: [signer.certificatePem, ...signer.chainPem],
  });
}

function refusal(envelope: SignedSnapshot, applied: bigint): string {
  try {
    verifySignedSnapshot(envelope, me, applied);
  } catch (err) {
    expect(err).toBeInstanceOf(SnapshotRefused);
    return (err as Error).message;
  }
  throw new Error("the snapshot was accepted but must be refused");
}

describe("snapshots from the real router", () => {
  it("are accepted in order (the baseline every attack departs from)", () => {
    expect(versionOf(second)).toBeGreaterThan(versionOf(first));
    expect(verifySignedSnapshot(first, me, 0n).snapshot.nodeId).toBe("n-1");
    const applied = verifySignedSnapshot(second, me, versionOf(first));
    expect(applied.snapshot.workloads.map((w) => w.spec!.id)).toEqual(["w-1"]);
  });

  it("are refused when tampered with", () => {
    const flipped = Buffer.from(second.snapshot);
    flipped.writeUInt8(flipped.readUInt8(flipped.length - 1) ^ 0x01, flipped.length - 1);
    expect(refusal({ ...second, snapshot: flipped }, 0n)).toMatch(/signature does not match/);

    // A meaningful edit: the node grants itself a role and a workload it was never given.
    const edited = fromBinary(SnapshotSchema, first.snapshot);
    edited.roles.push("entry-node");
    edited.version += 100n;
    expect(refusal({ ...first, snapshot: toBinary(SnapshotSchema, edited) }, 0n)).toMatch(
      /signature does not match/,
    );

    const badSignature = Buffer.from(second.signature);
    badSignature.writeUInt8(badSignature.readUInt8(10) ^ 0x01, 10);
    expect(refusal({ ...second, signature: badSignature }, 0n)).toMatch(/signature/);
    expect(refusal({ ...second, signatureAlgorithm: "none" }, 0n)).toMatch(/not ecdsa-p256-sha256/);
  });

  it("are refused when rolled back or replayed", () => {
    expect(refusal(first, versionOf(second))).toMatch(/rolled back or replayed/);
    expect(refusal(second, versionOf(second))).toMatch(/rolled back or replayed/);
  });

  it("are refused when handed to another node", () => {
    expect(refusal(otherNodes, 0n)).toMatch(/for node "n-2"/);
  });

  it("are refused when signed by anyone but this fabric's router", async () => {
    const foreign = await createTestPki(fabric.trustDomain);
    const signers: Record<string, TlsCredentials> = {
      "a router identity of a foreign CA": await foreign.issue({ kind: "service", id: "router" }),
      "the registry's service identity": fabric.serviceIdentity("registry"),
      "the node itself": node,
      "a platform-admin": fabric.admin,
      "an expired router identity": await fabric.issue(
        { kind: "service", id: "router", grant: "router" },
        { notBefore: new Date(Date.now() - 7_200_000), notAfter: new Date(Date.now() - 3_600_000) },
      ),
      "a router of another trust domain, signed by this CA": await forgeIdentity(fabric, {
        commonName: "router",
        spiffeId: "spiffe://other.test/service/router",
        claims: { kind: "service", id: "router", grant: "router" },
      }),
      "a router certificate whose CN says otherwise": await forgeIdentity(fabric, {
        commonName: "registry",
        spiffeId: `spiffe://${fabric.trustDomain}/service/router`,
        claims: { kind: "service", id: "router", grant: "router" },
      }),
    };
    for (const [name, signer] of Object.entries(signers)) {
      expect([name, refusal(resign(second, signer), 0n)]).toEqual([name, expect.any(String)]);
    }
    // The router's real signature presented with another certificate as the signer.
    const registry = fabric.serviceIdentity("registry");
    expect(
      refusal({ ...second, signerChainPem: [registry.certificatePem, ...registry.chainPem] }, 0n),
    ).toMatch(/signature does not match/);
  });
});
