import { X509Certificate, createPublicKey } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { inspectCertificate, listAudit, verifyChain } from "@fabric/platform";
import {
  JoinRequestState,
  type WaitForApprovalResponse,
} from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signWaitForApproval } from "../src/protocol.js";
import {
  collect,
  joinNode,
  nodeKey,
  refusal,
  startEnrollmentUnderTest,
  storedState,
  type EnrollmentUnderTest,
} from "./fixtures/enrollment-under-test.js";

let t: EnrollmentUnderTest;

beforeAll(async () => {
  t = await startEnrollmentUnderTest({
    FABRIC_RECONCILE_INTERVAL_MS: "300",
    FABRIC_WAIT_POLL_INTERVAL_MS: "5000",
  });
});
afterAll(async () => t?.close());

const facts = { hostname: "relay-1", os: "linux", arch: "arm64", agentVersion: "1.0.0" };

/** A node that joined: its key, the request id and the challenge. */
async function joined(options: { clusterId?: string; autoApprove?: boolean; roles?: string[] } = {}) {
  const created = await t.client(t.platformAdmin).createJoinToken({
    clusterId: options.clusterId ?? "c1",
    allowedRoles: options.roles ?? ["relay-node", "entry-node"],
    autoApprove: options.autoApprove ?? false,
  });
  const key = await nodeKey();
  const res = await t.client().join({
    token: created.token,
    csrPem: key.csrPem,
    facts,
    capabilities: ["can_route_mesh"],
    requestedRoles: ["relay-node"],
  });
  return {
    ...key,
    id: res.joinRequestId,
    challenge: res.challenge,
    state: res.state,
    tokenId: created.joinToken!.id,
  };
}

/** Opens WaitForApproval with the node's proof and collects every message until the stream ends. */
function watch(node: { privateKeyPem: string; id: string; challenge: Uint8Array }) {
  const seen: WaitForApprovalResponse[] = [];
  const done = (async () => {
    for await (const res of t.client().waitForApproval({
      joinRequestId: node.id,
      signature: signWaitForApproval(node.privateKeyPem, node.id, node.challenge),
    })) {
      seen.push(res);
    }
    return seen;
  })();
  return { seen, done };
}

describe("WaitForApproval", () => {
  it("streams PENDING, then APPROVED with a certificate for the node's key, promptly after approval", async () => {
    const node = await joined();
    const stream = watch(node);
    await expect.poll(() => stream.seen.length).toBe(1);
    expect(stream.seen[0]!.state).toBe(JoinRequestState.PENDING);

    const approvedAt = Date.now();
    const approved = await t.client(t.platformAdmin).approveJoinRequest({ joinRequestId: node.id });
    const messages = await stream.done;
    // Woken by the approval itself, not by the (5 s) poll.
    expect(Date.now() - approvedAt).toBeLessThan(2_000);
    expect(messages.map((m) => m.state)).toEqual([JoinRequestState.PENDING, JoinRequestState.APPROVED]);
    const final = messages[1]!;
    expect(final.nodeId).toBe(approved.joinRequest!.nodeId);
    expect(final.clusterId).toBe("c1");
    expect(final.grantedRoles).toEqual(["relay-node"]);
    const cert = inspectCertificate(final.certificatePem);
    expect(cert.identity).toMatchObject({ kind: "node", id: final.nodeId, cluster: "c1" });
    expect(cert.grant).toBe("relay-node");
    expect(verifyChain(final.certificatePem, final.chainPem, final.caBundlePem)).toBe(true);
    const certKey = new X509Certificate(final.certificatePem).publicKey;
    expect(certKey.export({ type: "spki", format: "pem" })).toBe(
      createPublicKey(node.privateKeyPem).export({ type: "spki", format: "pem" }),
    );
    // Registered once, with what the node reported.
    const registered = [...t.peers.nodes.values()].filter((n) => n.nodeId === final.nodeId);
    expect(registered).toHaveLength(1);
    expect(registered[0]!.serial).toBe(cert.serialHex);

    // Collecting again returns the certificate again.
    const again = await watch(node).done;
    expect(again.map((m) => m.state)).toEqual([JoinRequestState.APPROVED]);
    expect(again[0]!.certificatePem).toBe(final.certificatePem);
  });

  it("refuses a wrong proof with Unauthenticated and audits the attempt", async () => {
    const node = await joined();
    const other = await nodeKey();
    const forged = signWaitForApproval(other.privateKeyPem, node.id, node.challenge);
    const err = await refusal(
      (async () => {
        for await (const _ of t.client().waitForApproval({ joinRequestId: node.id, signature: forged }))
          break;
      })(),
    );
    expect(err.code).toBe(Code.Unauthenticated);
    // Right key, wrong bytes (another request's id) is refused too.
    const wrongBytes = signWaitForApproval(
      node.privateKeyPem,
      "00000000-0000-4000-8000-000000000000",
      node.challenge,
    );
    const err2 = await refusal(
      (async () => {
        for await (const _ of t.client().waitForApproval({ joinRequestId: node.id, signature: wrongBytes }))
          break;
      })(),
    );
    expect(err2.code).toBe(Code.Unauthenticated);
    const events = await listAudit(t.pool, { action: "join_request.wait", targetId: node.id }, { limit: 5 });
    expect(events.map((e) => e.outcome)).toEqual(["refused", "refused"]);
    const missing = await refusal(
      (async () => {
        for await (const _ of t.client().waitForApproval({
          joinRequestId: "00000000-0000-4000-8000-000000000000",
          signature: forged,
        }))
          break;
      })(),
    );
    expect(missing.code).toBe(Code.NotFound);
  });

  it("reports a rejection with its reason", async () => {
    const node = await joined();
    const stream = watch(node);
    await expect.poll(() => stream.seen.length).toBe(1);
    await t.client(t.platformAdmin).rejectJoinRequest({ joinRequestId: node.id, reason: "unknown host" });
    const messages = await stream.done;
    expect(messages.map((m) => [m.state, m.rejectionReason])).toEqual([
      [JoinRequestState.PENDING, ""],
      [JoinRequestState.REJECTED, "unknown host"],
    ]);
    expect(
      (await refusal(t.client(t.platformAdmin).approveJoinRequest({ joinRequestId: node.id }))).code,
    ).toBe(Code.FailedPrecondition);
    expect(
      (
        await refusal(
          t.client(t.platformAdmin).rejectJoinRequest({ joinRequestId: node.id, reason: "again" }),
        )
      ).code,
    ).toBe(Code.FailedPrecondition);
  });

  it("expires undecided requests (short TTL) and tells the waiting node", async () => {
    const replica = await t.startReplica({ FABRIC_JOIN_REQUEST_TTL_MS: "1500" });
    const client = t.clientOf(replica.url);
    const created = await t.client(t.platformAdmin).createJoinToken({ clusterId: "c1" });
    const key = await nodeKey();
    const res = await client.join({ token: created.token, csrPem: key.csrPem, facts });
    const seen: JoinRequestState[] = [];
    for await (const m of client.waitForApproval({
      joinRequestId: res.joinRequestId,
      signature: signWaitForApproval(key.privateKeyPem, res.joinRequestId, res.challenge),
    }))
      seen.push(m.state);
    expect(seen).toEqual([JoinRequestState.PENDING, JoinRequestState.EXPIRED]);
    expect(
      (await refusal(t.client(t.platformAdmin).approveJoinRequest({ joinRequestId: res.joinRequestId })))
        .code,
    ).toBe(Code.FailedPrecondition);
    const events = await listAudit(
      t.pool,
      { action: "join_request.expire", targetId: res.joinRequestId },
      { limit: 5 },
    );
    expect(events).toHaveLength(1);
    await replica.close();
  });
});

describe("review", () => {
  it("lists and gets requests for admins, a cluster-admin only within its cluster", async () => {
    const inC3 = await joined({ clusterId: "c3" });
    const inC4 = await joined({ clusterId: "c4" });
    const c3Admin = t.client(await t.clusterAdmin("c3"));
    const listed = await c3Admin.listJoinRequests({});
    expect(listed.joinRequests.map((r) => r.id)).toEqual([inC3.id]);
    expect((await c3Admin.getJoinRequest({ joinRequestId: inC3.id })).joinRequest!.requestedRoles).toEqual([
      "relay-node",
    ]);
    // Thunks, so each call starts only when awaited (a refusal never goes unhandled).
    for (const call of [
      () => c3Admin.getJoinRequest({ joinRequestId: inC4.id }),
      () => c3Admin.approveJoinRequest({ joinRequestId: inC4.id }),
      () => c3Admin.rejectJoinRequest({ joinRequestId: inC4.id, reason: "no" }),
      () => c3Admin.listJoinRequests({ clusterId: "c4" }),
    ]) {
      expect((await refusal(call())).code).toBe(Code.PermissionDenied);
    }
    expect(
      (await t.client(t.platformAdmin).getJoinRequest({ joinRequestId: inC4.id })).joinRequest!.clusterId,
    ).toBe("c4");
    const pending = await t
      .client(t.platformAdmin)
      .listJoinRequests({ clusterId: "c4", state: JoinRequestState.PENDING });
    expect(pending.joinRequests.map((r) => r.id)).toEqual([inC4.id]);
    // The cluster-admin approves in its own cluster.
    const approved = await c3Admin.approveJoinRequest({ joinRequestId: inC3.id });
    expect(approved.joinRequest!.state).toBe(JoinRequestState.APPROVED);
    expect(approved.joinRequest!.decidedBy!.id).toBe("ca-c3");
  });

  it("refuses nodes, developers, org-admins and anonymous callers", async () => {
    const node = await joined();
    for (const creds of [
      await t.pki.issue({ kind: "node", id: "n9", cluster: "c1" }),
      await t.pki.issue({ kind: "user", id: "dev9" }),
      await t.orgAdmin("o1"),
    ]) {
      expect((await refusal(t.client(creds).approveJoinRequest({ joinRequestId: node.id }))).code).toBe(
        Code.PermissionDenied,
      );
      expect((await refusal(t.client(creds).listJoinRequests({}))).code).toBe(Code.PermissionDenied);
    }
    expect((await refusal(t.client().approveJoinRequest({ joinRequestId: node.id }))).code).toBe(
      Code.Unauthenticated,
    );
  });

  it("refuses granting roles the node did not request or the token does not allow", async () => {
    const node = await joined();
    const err = await refusal(
      t.client(t.platformAdmin).approveJoinRequest({ joinRequestId: node.id, grantedRoles: ["entry-node"] }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(
      (await t.client(t.platformAdmin).getJoinRequest({ joinRequestId: node.id })).joinRequest!.state,
    ).toBe(JoinRequestState.PENDING);
  });
});

describe("approval is idempotent and crash-safe", () => {
  it("approving twice, even concurrently, yields one node and one certificate", async () => {
    const node = await joined();
    const signsBefore = t.peers.signRequests.length;
    const admin = t.client(t.platformAdmin);
    const [a, b] = await Promise.all([
      admin.approveJoinRequest({ joinRequestId: node.id }),
      admin.approveJoinRequest({ joinRequestId: node.id }),
    ]);
    const c = await admin.approveJoinRequest({ joinRequestId: node.id });
    expect(new Set([a, b, c].map((r) => r.joinRequest!.nodeId)).size).toBe(1);
    expect(new Set([a, b, c].map((r) => r.joinRequest!.certificateSerial)).size).toBe(1);
    expect(t.peers.signRequests.length - signsBefore).toBe(1);
    expect([...t.peers.nodes.keys()].filter((id) => id === node.id)).toHaveLength(1);
  });

  it("completes in the background when the registry was down at approval", async () => {
    const node = await joined();
    t.peers.registryMode = "unavailable";
    try {
      const err = await refusal(t.client(t.platformAdmin).approveJoinRequest({ joinRequestId: node.id }));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/completes automatically/);
      // Still pending to everyone: the node does not exist yet.
      expect(
        (await t.client(t.platformAdmin).getJoinRequest({ joinRequestId: node.id })).joinRequest!.state,
      ).toBe(JoinRequestState.PENDING);
    } finally {
      t.peers.registryMode = "ok";
    }
    const messages = await watch(node).done;
    expect(messages.at(-1)!.state).toBe(JoinRequestState.APPROVED);
    expect([...t.peers.nodes.keys()].filter((id) => id === node.id)).toHaveLength(1);
    // Signed once: the reconciler reused the stored certificate.
    expect(t.peers.signRequests.filter((r) => r.authorizationRef === `join-request/${node.id}`)).toHaveLength(
      1,
    );
  });

  it("revokes the certificate of a Sign whose answer was lost, leaving the node one", async () => {
    const node = await joined();
    t.peers.caMode = "lose-answer";
    try {
      const err = await refusal(t.client(t.platformAdmin).approveJoinRequest({ joinRequestId: node.id }));
      expect(err.code).toBe(Code.Unavailable);
    } finally {
      t.peers.caMode = "ok";
    }
    const messages = await watch(node).done;
    expect(messages.at(-1)!.state).toBe(JoinRequestState.APPROVED);
    // The client retried Unavailable a few times, and every one of those Signs was issued and lost.
    const signed = t.peers.signRequests.filter((r) => r.authorizationRef === `join-request/${node.id}`);
    expect(signed.length).toBeGreaterThanOrEqual(2);
    const held = inspectCertificate(messages.at(-1)!.certificatePem).serialHex;
    const issuedEvent = (
      await listAudit(t.pool, { action: "join_request.certificate_issued", targetId: node.id }, { limit: 5 })
    )[0]!;
    expect(issuedEvent.details.serial).toBe(held);
    const orphans = issuedEvent.details.abandonedSerials!.split(",");
    expect(orphans).toHaveLength(signed.length - 1);
    expect(orphans).not.toContain(held);
    await expect
      .poll(() => orphans.filter((serial) => !t.peers.revokedSerials.includes(serial)), { timeout: 10_000 })
      .toEqual([]);
    expect(t.peers.revokedSerials).not.toContain(held);
  });

  it("returns a request the registry refuses to PENDING and revokes its certificate", async () => {
    const node = await joined();
    t.peers.registryMode = "refuse";
    try {
      const err = await refusal(t.client(t.platformAdmin).approveJoinRequest({ joinRequestId: node.id }));
      expect(err.code).toBe(Code.FailedPrecondition);
      expect(err.rawMessage).toMatch(/pending again/);
    } finally {
      t.peers.registryMode = "ok";
    }
    const got = await t.client(t.platformAdmin).getJoinRequest({ joinRequestId: node.id });
    expect(got.joinRequest!.state).toBe(JoinRequestState.PENDING);
    const failed = await listAudit(
      t.pool,
      { action: "join_request.approve", targetId: node.id },
      { limit: 5 },
    );
    const serial = failed.find((e) => e.outcome === "failed")!.details.serial!;
    expect(serial).toMatch(/^[0-9a-f]+$/);
    expect(t.peers.revokedSerials).toContain(serial);
    expect((await t.pool.query("SELECT 1 FROM abandoned_certificates")).rowCount).toBe(0);
    // The admin can approve again once the cause is fixed.
    const approved = await t.client(t.platformAdmin).approveJoinRequest({ joinRequestId: node.id });
    expect(approved.joinRequest!.state).toBe(JoinRequestState.APPROVED);
    expect(approved.joinRequest!.certificateSerial).not.toBe(serial);
  });

  it("auto-approving tokens approve at Join, audited as the enrollment service", async () => {
    const node = await joined({ autoApprove: true });
    expect(node.state).toBe(JoinRequestState.APPROVED);
    const messages = await watch(node).done;
    expect(messages.map((m) => m.state)).toEqual([JoinRequestState.APPROVED]);
    const events = await listAudit(
      t.pool,
      { action: "join_request.approve", targetId: node.id },
      { limit: 5 },
    );
    expect(events.map((e) => [e.actorKind, e.actorId, e.details.autoApprove])).toEqual([
      ["service", "enrollment", "true"],
    ]);
  });
});

describe("attaching a join request to an existing node (ApproveJoinRequest.node_id)", () => {
  const issuedEvent = async (id: string) =>
    (await listAudit(t.pool, { action: "join_request.certificate_issued", targetId: id }, { limit: 5 }))[0]!;
  /** A host joined to `cluster` and approved by a platform-admin: its identity. */
  const enrolled = async (cluster: string) => {
    const node = await joinNode(t, cluster);
    await t.client(t.platformAdmin).approveJoinRequest({ joinRequestId: node.id });
    return collect(t, node);
  };

  it("adds the same host to a second cluster without touching its first-cluster certificate", async () => {
    const first = await enrolled("attach-1");
    const second = await joinNode(t, "attach-2");
    const approved = await t
      .client(t.platformAdmin)
      .approveJoinRequest({ joinRequestId: second.id, nodeId: first.nodeId });
    expect(approved.joinRequest!.nodeId).toBe(first.nodeId);
    const attached = await collect(t, second);
    expect(inspectCertificate(attached.certificatePem).identity).toMatchObject({
      kind: "node",
      id: first.nodeId,
      cluster: "attach-2",
    });
    // Only certificates issued for this very join request could ever be orphans: none here.
    expect((await issuedEvent(second.id)).details.abandonedSerials).toBeUndefined();
    expect((await t.pool.query("SELECT 1 FROM abandoned_certificates")).rowCount).toBe(0);
    expect(t.peers.revokedSerials).not.toContain(first.serial);
  });

  it("refuses a cluster-admin a node of another cluster as not found, changing nothing anywhere", async () => {
    const victim = await enrolled("victim-c");
    const attacker = t.client(await t.clusterAdmin("attacker-c"));
    const token = await attacker.createJoinToken({ clusterId: "attacker-c" });
    const host = await nodeKey();
    const joinedHost = await t.client().join({ token: token.token, csrPem: host.csrPem });
    const before = await storedState(t.pool);
    const signs = t.peers.signRequests.length;
    const err = await refusal(
      attacker.approveJoinRequest({ joinRequestId: joinedHost.joinRequestId, nodeId: victim.nodeId }),
    );
    expect(err.code).toBe(Code.NotFound);
    expect(err.rawMessage).not.toContain("victim-c");
    expect(await storedState(t.pool)).toBe(before);
    expect(t.peers.signRequests.length).toBe(signs);
    expect(t.peers.revokedSerials).not.toContain(victim.serial);
    expect(
      (await attacker.getJoinRequest({ joinRequestId: joinedHost.joinRequestId })).joinRequest!.state,
    ).toBe(JoinRequestState.PENDING);
  });

  it("refuses a cluster-admin a node that is also a member of a cluster it does not administer", async () => {
    const node = await enrolled("shared-1");
    const other = await joinNode(t, "shared-2");
    await t.client(t.platformAdmin).approveJoinRequest({ joinRequestId: other.id, nodeId: node.nodeId });
    // The node is in shared-1 and shared-2; shared-1's admin may not hand its identity to a third host.
    const admin = t.client(await t.clusterAdmin("shared-1"));
    const third = await joinNode(t, "shared-1");
    const err = await refusal(admin.approveJoinRequest({ joinRequestId: third.id, nodeId: node.nodeId }));
    expect(err.code).toBe(Code.PermissionDenied);
    expect(err.rawMessage).not.toContain("shared-2");
  });

  it("refuses unknown and revoked nodes, and a node already in the request's cluster", async () => {
    const admin = t.client(t.platformAdmin);
    const pending = await joinNode(t, "attach-3");
    expect(
      (await refusal(admin.approveJoinRequest({ joinRequestId: pending.id, nodeId: "nobody" }))).code,
    ).toBe(Code.NotFound);
    const member = await enrolled("attach-3");
    const again = await refusal(
      admin.approveJoinRequest({ joinRequestId: pending.id, nodeId: member.nodeId }),
    );
    expect([again.code, again.rawMessage]).toEqual([
      Code.FailedPrecondition,
      expect.stringMatching(/already a member of cluster "attach-3"/),
    ]);
    const banned = await enrolled("attach-4");
    t.peers.revokedNodes.add(banned.nodeId);
    expect(
      (await refusal(admin.approveJoinRequest({ joinRequestId: pending.id, nodeId: banned.nodeId }))).code,
    ).toBe(Code.FailedPrecondition);
    expect((await admin.getJoinRequest({ joinRequestId: pending.id })).joinRequest!.state).toBe(
      JoinRequestState.PENDING,
    );
  });
});
