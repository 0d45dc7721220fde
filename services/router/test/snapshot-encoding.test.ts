import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { WorkloadSchema } from "@fabric/proto/fabric/registry/v1/workload_pb.js";
import { normalizePem } from "@fabric/platform";
import { createTestPki } from "@fabric/platform/testing";
import {
  EntryPolicySchema,
  PeerTier,
  SnapshotSchema,
  WatchResponseSchema,
} from "@fabric/proto/fabric/router/v1/router_pb.js";
import { describe, expect, it } from "vitest";
import type { WorkloadRecord } from "../src/fabric-model.js";
import { appendVersion, encodePeerIdentity, encodeSnapshotContent } from "../src/snapshot-encoding.js";
import { SIGNATURE_ALGORITHM, SnapshotSigner } from "../src/snapshot-signer.js";

const longAddress = `${"relay-".repeat(60)}.example:7800`; // over 127 bytes: two-byte length prefixes
const workload: WorkloadRecord = {
  id: "w1",
  clusterId: "c1",
  role: "rdp-worker",
  organizationId: "o1",
  nodeIds: [],
  workload: create(WorkloadSchema, {
    generation: 300n,
    spec: {
      id: "w1",
      clusterId: "c1",
      role: "rdp-worker",
      organizationId: "o1",
      runtime: Runtime.NATIVE,
      environment: Environment.DEV,
      command: "/opt/rdp/worker",
      args: ["--port", "3389"],
      env: { MODE: "fast" },
    },
  }),
};

/** A node with nothing assigned: what a disabled membership's snapshot holds. */
const EMPTY = { nodeId: "n", clusterId: "c", roles: [], peers: [], routes: [], workloads: [], resources: [] };

describe("snapshot encoding", () => {
  it("writes standard protobuf that protobuf-es decodes to exactly the intended Snapshot", () => {
    const content = encodeSnapshotContent({
      nodeId: "n-1",
      clusterId: "c1",
      roles: ["entry-node", "relay-node"],
      peers: [
        {
          identity: encodePeerIdentity("r-1", ["10.0.0.1:7800", longAddress], "eu-central"),
          tier: PeerTier.ACTIVE,
          score: 0.875,
        },
        { identity: encodePeerIdentity("nœud-2", [], ""), tier: PeerTier.COLD, score: 0 },
      ],
      routes: [
        {
          id: "egress/p1/o1",
          destination: { kind: "egressPool", id: "p1" },
          organizationId: "o1",
          nextHopNodeId: "x1",
          failoverNodeIds: Array.from({ length: 40 }, (_, i) => `failover-node-${i}`), // a route over 127 bytes
          cost: 0.25,
        },
        {
          id: "service/w1",
          destination: { kind: "serviceNode", id: "n-1" },
          organizationId: "",
          nextHopNodeId: "",
          failoverNodeIds: [],
          cost: 0,
        },
      ],
      entryPolicy: create(EntryPolicySchema, {
        organizationIds: ["o1"],
        egressPoolIds: ["p1"],
        listenAddresses: ["a:1"],
      }),
      workloads: [workload],
      resources: [
        {
          $typeName: "fabric.router.v1.ResourceReference",
          type: "egress-pool",
          id: "p1",
          organizationId: "o1",
          workloadId: "",
        },
      ],
    });
    const bytes = appendVersion(content, 12_345_678_901n, Date.UTC(2025, 0, 1));
    expect(Buffer.from(bytes.subarray(0, content.length)).equals(Buffer.from(content))).toBe(true);
    const decoded = fromBinary(SnapshotSchema, bytes);
    const expected = create(SnapshotSchema, {
      nodeId: "n-1",
      clusterId: "c1",
      version: 12_345_678_901n,
      generatedAt: timestampFromMs(Date.UTC(2025, 0, 1)),
      roles: ["entry-node", "relay-node"],
      peers: [
        {
          nodeId: "r-1",
          tier: PeerTier.ACTIVE,
          addresses: ["10.0.0.1:7800", longAddress],
          score: 0.875,
          region: "eu-central",
        },
        { nodeId: "nœud-2", tier: PeerTier.COLD, score: 0 },
      ],
      routes: [
        {
          id: "egress/p1/o1",
          destination: { case: "egressPoolId", value: "p1" },
          organizationId: "o1",
          nextHopNodeId: "x1",
          failoverNodeIds: Array.from({ length: 40 }, (_, i) => `failover-node-${i}`),
          cost: 0.25,
        },
        { id: "service/w1", destination: { case: "serviceNodeId", value: "n-1" } },
      ],
      entryPolicy: { organizationIds: ["o1"], egressPoolIds: ["p1"], listenAddresses: ["a:1"] },
      workloads: [{ spec: workload.workload.spec, generation: 300n }],
      resources: [{ type: "egress-pool", id: "p1", organizationId: "o1" }],
    });
    expect(equals(SnapshotSchema, decoded, expected)).toBe(true);
    // and the library's own encoding of it decodes to the same message
    expect(
      equals(SnapshotSchema, fromBinary(SnapshotSchema, toBinary(SnapshotSchema, decoded)), expected),
    ).toBe(true);
  });

  it("encodes an empty snapshot (a disabled membership) as just its node and cluster", () => {
    const content = encodeSnapshotContent(EMPTY);
    expect(
      equals(
        SnapshotSchema,
        fromBinary(SnapshotSchema, content),
        create(SnapshotSchema, { nodeId: "n", clusterId: "c" }),
      ),
    ).toBe(true);
  });

  it("writes the generation time to the millisecond, as timestampFromMs does", () => {
    const content = encodeSnapshotContent(EMPTY);
    for (const at of [Date.UTC(2025, 0, 1, 12, 0, 0, 123), 999, 0]) {
      const decoded = fromBinary(SnapshotSchema, appendVersion(content, 7n, at));
      expect(decoded.generatedAt).toEqual(timestampFromMs(at));
    }
  });

  it("sends the signed snapshot as an ordinary WatchResponse", async () => {
    const pki = await createTestPki("fabric.test");
    const router = await pki.issue({ kind: "service", id: "router" });
    const signer = new SnapshotSigner(() => router);
    const snapshot = appendVersion(
      encodeSnapshotContent({
        nodeId: "n",
        clusterId: "c",
        roles: [],
        peers: [],
        routes: [],
        workloads: [],
        resources: [],
      }),
      3n,
      Date.UTC(2025, 0, 1),
    );
    const wire = toBinary(
      WatchResponseSchema,
      signer.envelope({ nodeId: "n", clusterId: "c", version: 3n, bytes: snapshot, contentLength: 0 }),
    );
    const signed = fromBinary(WatchResponseSchema, wire).signedSnapshot!;
    expect(signed.snapshot).toEqual(snapshot);
    expect(signed.signatureAlgorithm).toBe(SIGNATURE_ALGORITHM);
    expect(signed.signerChainPem).toEqual([router.certificatePem, ...router.chainPem].map(normalizePem));
    expect(signed.signature.length).toBeGreaterThan(64);
    // and exactly what protobuf-es writes for the same message
    expect(
      Buffer.from(wire).equals(
        Buffer.from(toBinary(WatchResponseSchema, create(WatchResponseSchema, { signedSnapshot: signed }))),
      ),
    ).toBe(true);
  });
});
