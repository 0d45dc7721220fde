import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { create } from "@bufbuild/protobuf";
import type { TlsCredentials } from "@fabric/platform";
import { createTestPki, type TestPki } from "@fabric/platform/testing";
import { SignedSnapshotSchema } from "@fabric/proto/fabric/router/v1/router_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SnapshotHighWater, loadPersistedSnapshot, persistSnapshot } from "../src/snapshot-store.js";
import { SnapshotRefused, verifySignedSnapshot, type VerifierIdentity } from "../src/snapshot-verifier.js";
import { agentPaths, forgetIdentity } from "../src/state-dir.js";
import { signBytes, signSnapshot, snapshot } from "./fixtures/snapshots.js";
import { removeTempDirs, tempDir } from "./fixtures/temp-dirs.js";

afterAll(removeTempDirs);

let pki: TestPki;
let foreign: TestPki;
let router: TlsCredentials;
let me: VerifierIdentity;
const ids: Record<string, TlsCredentials> = {};

beforeAll(async () => {
  pki = await createTestPki("fabric.test");
  foreign = await createTestPki("fabric.test");
  router = await pki.issue({ kind: "service", id: "router" });
  ids.registry = await pki.issue({ kind: "service", id: "registry" });
  ids.node = await pki.issue({ kind: "node", id: "n-2", cluster: "c1" });
  ids.admin = await pki.issue({ kind: "admin", id: "alice", grant: "platform-admin" });
  ids.foreignRouter = await foreign.issue({ kind: "service", id: "router" });
  ids.otherDomainRouter = await (await createTestPki("other.test")).issue({ kind: "service", id: "router" });
  ids.expiredRouter = await pki.issue(
    { kind: "service", id: "router" },
    { notBefore: new Date(Date.now() - 7_200_000), notAfter: new Date(Date.now() - 3_600_000) },
  );
  me = { trustDomain: "fabric.test", nodeId: "n-1", clusterId: "c1", caBundlePem: pki.rootPem };
});

const good = (version = 5n) => snapshot({ nodeId: "n-1", clusterId: "c1", version, roles: ["relay-node"] });

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SnapshotRefused);
    return (err as Error).message;
  }
  throw new Error("the snapshot was accepted but should have been refused");
}

describe("snapshot verification", () => {
  it("accepts a snapshot signed by the router, chained to the CA bundle, for this node, newer", () => {
    const verified = verifySignedSnapshot(signSnapshot(router, good()), me, 4n);
    expect(verified.snapshot.version).toBe(5n);
    expect(verified.snapshot.roles).toEqual(["relay-node"]);
  });

  it("refuses a payload changed after signing", () => {
    const envelope = signSnapshot(router, good());
    const tampered = Buffer.from(envelope.snapshot);
    tampered.writeUInt8(tampered.readUInt8(tampered.length - 1) ^ 0x01, tampered.length - 1);
    expect(refusal(() => verifySignedSnapshot({ ...envelope, snapshot: tampered }, me, 0n))).toMatch(
      /signature does not match/,
    );
    // A payload swapped for another validly encoded snapshot under the old signature is refused too.
    const other = signSnapshot(
      router,
      snapshot({ nodeId: "n-1", clusterId: "c1", version: 6n, roles: ["entry-node"] }),
    );
    expect(refusal(() => verifySignedSnapshot({ ...envelope, snapshot: other.snapshot }, me, 0n))).toMatch(
      /signature does not match/,
    );
  });

  it("refuses a rolled-back or replayed version", () => {
    expect(refusal(() => verifySignedSnapshot(signSnapshot(router, good(3n)), me, 4n))).toMatch(
      /version 3 is not newer than the applied version 4/,
    );
    expect(refusal(() => verifySignedSnapshot(signSnapshot(router, good(4n)), me, 4n))).toMatch(/not newer/);
  });

  it("refuses snapshots signed by anyone but the router: registry, a node, an admin", () => {
    for (const who of ["registry", "node", "admin"]) {
      expect(
        refusal(() => verifySignedSnapshot(signSnapshot(ids[who]!, good()), me, 0n)),
        who,
      ).toMatch(/signed by spiffe:\/\/fabric\.test\/.*, not by spiffe:\/\/fabric\.test\/service\/router/);
    }
  });

  it("refuses a router certificate from a foreign CA or another trust domain", () => {
    expect(refusal(() => verifySignedSnapshot(signSnapshot(ids.foreignRouter!, good()), me, 0n))).toMatch(
      /chain does not lead to this node's CA bundle/,
    );
    expect(refusal(() => verifySignedSnapshot(signSnapshot(ids.otherDomainRouter!, good()), me, 0n))).toMatch(
      /chain does not lead/,
    );
  });

  it("refuses a foreign router that copies the real router's chain next to its own signature", () => {
    const bytes = signSnapshot(router, good()).snapshot;
    const forged = create(SignedSnapshotSchema, {
      snapshot: bytes,
      signature: signBytes(ids.foreignRouter!, bytes),
      signatureAlgorithm: "ecdsa-p256-sha256",
      signerChainPem: [router.certificatePem, ...router.chainPem],
    });
    expect(refusal(() => verifySignedSnapshot(forged, me, 0n))).toMatch(/signature does not match/);
  });

  it("refuses an expired signer, another algorithm, a missing chain, and snapshots for other nodes", () => {
    expect(refusal(() => verifySignedSnapshot(signSnapshot(ids.expiredRouter!, good()), me, 0n))).toMatch(
      /chain/,
    );
    const envelope = signSnapshot(router, good());
    expect(
      refusal(() => verifySignedSnapshot({ ...envelope, signatureAlgorithm: "rsa-sha256" }, me, 0n)),
    ).toMatch(/algorithm "rsa-sha256"/);
    expect(refusal(() => verifySignedSnapshot({ ...envelope, signerChainPem: [] }, me, 0n))).toMatch(
      /no signer certificate/,
    );
    const otherNode = snapshot({ nodeId: "n-2", clusterId: "c1", version: 9n });
    expect(refusal(() => verifySignedSnapshot(signSnapshot(router, otherNode), me, 0n))).toMatch(
      /node "n-2"/,
    );
    const otherCluster = snapshot({ nodeId: "n-1", clusterId: "c2", version: 9n });
    expect(refusal(() => verifySignedSnapshot(signSnapshot(router, otherCluster), me, 0n))).toMatch(
      /cluster "c2"/,
    );
  });
});

describe("the persisted snapshot", () => {
  it("is stored exactly as received and verified again when loaded", () => {
    const paths = agentPaths(tempDir("agent-snap-"));
    const envelope = signSnapshot(router, good(7n));
    persistSnapshot(paths, envelope);
    expect(loadPersistedSnapshot(paths, me)?.snapshot.version).toBe(7n);
    // A router certificate that has expired since still vouches for what it signed while valid.
    const old = snapshot({
      nodeId: "n-1",
      clusterId: "c1",
      version: 8n,
      generatedAt: { seconds: BigInt(Math.floor((Date.now() - 5_400_000) / 1000)) },
    });
    persistSnapshot(paths, signSnapshot(ids.expiredRouter!, old));
    expect(loadPersistedSnapshot(paths, me)?.snapshot.version).toBe(8n);
  });

  it("is refused when the file was altered or is not a snapshot", () => {
    const paths = agentPaths(tempDir("agent-snap-"));
    persistSnapshot(paths, signSnapshot(router, good(7n)));
    const bytes = readFileSync(paths.snapshot);
    const at = bytes.indexOf(Buffer.from("relay-node"));
    bytes[at] = "x".charCodeAt(0);
    writeFileSync(paths.snapshot, bytes);
    expect(() => loadPersistedSnapshot(paths, me)).toThrow(/signature does not match/);
    writeFileSync(paths.snapshot, "not a protobuf \xff\xff");
    expect(() => loadPersistedSnapshot(paths, me)).toThrow(SnapshotRefused);
  });
});

describe("the snapshot high-water mark", () => {
  it("only rises, survives a restart, and refuses anything older", () => {
    const paths = agentPaths(tempDir("agent-hwm-"));
    const mark = new SnapshotHighWater(paths);
    expect(mark.version).toBe(0n);
    mark.raise(7n);
    mark.raise(4n); // never lowered
    expect(new SnapshotHighWater(paths).version).toBe(7n);
    expect(statSync(paths.snapshotHighWater).mode & 0o777).toBe(0o600);
    expect(refusal(() => new SnapshotHighWater(paths).check(6n))).toBe(
      "version 6 is older than version 7, the newest this node has trusted (rolled back or replayed)",
    );
    expect(() => mark.check(7n)).not.toThrow(); // the same snapshot again, e.g. from disk
  });

  it("stops the agent rather than guess when the mark is unreadable, and goes with the identity", () => {
    const paths = agentPaths(tempDir("agent-hwm-"));
    writeFileSync(paths.snapshotHighWater, "{ not json");
    expect(() => new SnapshotHighWater(paths)).toThrow(/will not guess which snapshots it may trust/);
    writeFileSync(paths.snapshotHighWater, JSON.stringify({ version: "-1" }));
    expect(() => new SnapshotHighWater(paths)).toThrow(/does not hold a snapshot version/);
    forgetIdentity(paths);
    expect(existsSync(paths.snapshotHighWater)).toBe(false);
  });
});
