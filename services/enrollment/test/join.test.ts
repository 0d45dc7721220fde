import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { fromPem, listAudit, toPem, x509 } from "@fabric/platform";
import { CertificationRequest } from "@peculiar/asn1-csr";
import { AsnConvert } from "@peculiar/asn1-schema";
import { JoinRequestState } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  asText,
  codeOf,
  nodeKey,
  refusal,
  startEnrollmentUnderTest,
  type EnrollmentUnderTest,
} from "./fixtures/enrollment-under-test.js";

let t: EnrollmentUnderTest;

beforeAll(async () => {
  // Generous anonymous limits: these tests measure token semantics, not rate limiting (tested last).
  t = await startEnrollmentUnderTest({
    FABRIC_ADDRESS_RATE_PER_SECOND: "1000",
    FABRIC_ADDRESS_BURST: "1000",
    FABRIC_CREDENTIAL_RATE_PER_SECOND: "1000",
    FABRIC_CREDENTIAL_BURST: "1000",
  });
});
afterAll(async () => t?.close());

const facts = { hostname: "edge-7.example.net", os: "linux", arch: "x64", agentVersion: "1.0.0" };

async function token(
  init: { clusterId?: string; allowedRoles?: string[]; maxUses?: number; ttlMs?: number } = {},
) {
  const res = await t.client(t.platformAdmin).createJoinToken({
    clusterId: init.clusterId ?? "c1",
    allowedRoles: init.allowedRoles ?? ["relay-node", "entry-node"],
    maxUses: init.maxUses ?? 1,
    ...(init.ttlMs ? { ttl: durationFromMs(init.ttlMs) } : {}),
  });
  return { token: res.token, id: res.joinToken!.id, secret: res.token.split(".")[1]! };
}

const requestCount = async () =>
  (await t.pool.query("SELECT count(*)::int AS n FROM join_requests")).rows[0].n as number;
const usesOf = async (id: string) =>
  (await t.pool.query("SELECT uses FROM join_tokens WHERE id = $1", [id])).rows[0].uses as number;

describe("Join", () => {
  it("creates a pending request with facts, capabilities, roles and a 32-byte challenge", async () => {
    const { token: tok, id } = await token({ maxUses: 2 });
    const key = await nodeKey();
    const res = await t.client().join({
      token: tok,
      csrPem: key.csrPem,
      facts,
      capabilities: ["can_route_mesh"],
      requestedRoles: ["relay-node"],
    });
    expect(res.state).toBe(JoinRequestState.PENDING);
    expect(res.challenge).toHaveLength(32);
    const got = await t.client(t.platformAdmin).getJoinRequest({ joinRequestId: res.joinRequestId });
    expect(got.joinRequest).toMatchObject({
      clusterId: "c1",
      tokenId: id,
      nodeName: "edge-7",
      capabilities: ["can_route_mesh"],
      requestedRoles: ["relay-node"],
      allowedRoles: ["relay-node", "entry-node"],
      state: JoinRequestState.PENDING,
    });
    expect(got.joinRequest!.facts).toMatchObject(facts);
    expect(got.joinRequest!.publicKeySha256).toMatch(/^[0-9a-f]{64}$/);
    expect(got.joinRequest!.peerAddress).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(await usesOf(id)).toBe(1);
  });

  it("100 concurrent joins of different hosts on a single-use token create exactly one request", async () => {
    const { token: tok, id } = await token({ maxUses: 1 });
    const keys = await Promise.all(Array.from({ length: 100 }, () => nodeKey()));
    const before = await requestCount();
    const codes = await Promise.all(
      keys.map((key) => codeOf(t.client().join({ token: tok, csrPem: key.csrPem, facts }))),
    );
    expect(codes.filter((c) => c === "ok")).toHaveLength(1);
    expect(codes.filter((c) => c === Code.FailedPrecondition)).toHaveLength(99);
    expect(await requestCount()).toBe(before + 1);
    expect(await usesOf(id)).toBe(1);
    const refused = await listAudit(t.pool, { action: "join_request.create", targetId: id }, { limit: 200 });
    expect(refused.filter((e) => e.outcome === "refused")).toHaveLength(99);
  });

  it("answers a host sending Join again (same token, same key) with the request it has, using nothing", async () => {
    const { token: tok, id } = await token({ maxUses: 2 });
    const key = await nodeKey();
    const first = await t.client().join({ token: tok, csrPem: key.csrPem, facts });
    const before = await requestCount();
    // Sent again at once, as a host whose first call got no answer would, many times over.
    const again = await Promise.all(
      Array.from({ length: 20 }, () => t.client().join({ token: tok, csrPem: key.csrPem, facts })),
    );
    expect(new Set(again.map((r) => r.joinRequestId))).toEqual(new Set([first.joinRequestId]));
    expect(Buffer.from(again[0]!.challenge)).toEqual(Buffer.from(first.challenge));
    expect(await requestCount()).toBe(before);
    expect(await usesOf(id)).toBe(1);
  });

  it("refuses a replayed single-use token with FailedPrecondition and creates nothing", async () => {
    const { token: tok } = await token();
    await t.client().join({ token: tok, csrPem: (await nodeKey()).csrPem, facts });
    const before = await requestCount();
    const err = await refusal(t.client().join({ token: tok, csrPem: (await nodeKey()).csrPem, facts }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toMatch(/used 1 of 1 times/);
    expect(await requestCount()).toBe(before);
  });

  it("refuses expired and revoked tokens with FailedPrecondition", async () => {
    const key = await nodeKey();
    const expired = await token({ ttlMs: 1_000 });
    await new Promise((r) => setTimeout(r, 1_100));
    const revoked = await token();
    await t.client(t.platformAdmin).revokeJoinToken({ tokenId: revoked.id });
    const before = await requestCount();
    const e1 = await refusal(t.client().join({ token: expired.token, csrPem: key.csrPem, facts }));
    expect([e1.code, e1.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/expired/)]);
    const e2 = await refusal(t.client().join({ token: revoked.token, csrPem: key.csrPem, facts }));
    expect([e2.code, e2.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/revoked/)]);
    expect(await requestCount()).toBe(before);
    expect(await usesOf(expired.id)).toBe(0);
    expect(await usesOf(revoked.id)).toBe(0);
  });

  it("refuses unknown tokens and wrong secrets with Unauthenticated, never echoing the token", async () => {
    const key = await nodeKey();
    const real = await token();
    const wrongSecret = `${real.id}.${Buffer.alloc(32, 7).toString("base64url")}`;
    const unknown = `0123456789abcdef.${Buffer.alloc(32, 9).toString("base64url")}`;
    for (const tok of [wrongSecret, unknown]) {
      const err = await refusal(t.client().join({ token: tok, csrPem: key.csrPem, facts }));
      expect(err.code).toBe(Code.Unauthenticated);
      expect(err.rawMessage).not.toContain(tok.split(".")[1]);
    }
    expect((await refusal(t.client().join({ token: "not-a-token", csrPem: key.csrPem }))).code).toBe(
      Code.InvalidArgument,
    );
    expect(await usesOf(real.id)).toBe(0);
    const audited = await listAudit(t.pool, { action: "join_request.create" }, { limit: 500 });
    expect(asText(audited)).not.toContain(Buffer.alloc(32, 7).toString("base64url"));
    expect(asText(audited)).not.toContain(real.secret);
  });

  it("refuses a token of another cluster than the node expects with PermissionDenied", async () => {
    const key = await nodeKey();
    const other = await token({ clusterId: "c2" });
    const before = await requestCount();
    const err = await refusal(
      t.client().join({ token: other.token, csrPem: key.csrPem, facts, clusterId: "c1" }),
    );
    expect(err.code).toBe(Code.PermissionDenied);
    expect(await requestCount()).toBe(before);
    expect(await usesOf(other.id)).toBe(0);
    // The same token joins its own cluster.
    const ok = await t.client().join({ token: other.token, csrPem: key.csrPem, facts, clusterId: "c2" });
    expect(ok.state).toBe(JoinRequestState.PENDING);
  });

  it("refuses roles beyond the token's allowed roles with InvalidArgument, using nothing", async () => {
    const key = await nodeKey();
    const scoped = await token({ allowedRoles: ["entry-node"] });
    const before = await requestCount();
    const err = await refusal(
      t
        .client()
        .join({ token: scoped.token, csrPem: key.csrPem, facts, requestedRoles: ["entry-node", "vpn-exit"] }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain("vpn-exit");
    expect(await requestCount()).toBe(before);
    expect(await usesOf(scoped.id)).toBe(0);
  });

  it("verifies the CSR (P-256, proof of possession) before using the token", async () => {
    const scoped = await token();
    const before = await requestCount();
    const p384 = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-384" }, true, [
      "sign",
      "verify",
    ]);
    const p384Csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "CN=p384",
      keys: p384,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-384" },
    });
    // A CSR carrying one key but signed by another: no proof of possession.
    const [a, b] = [await nodeKey(), await nodeKey()];
    const forged = AsnConvert.parse(fromPem(a.csrPem, "CERTIFICATE REQUEST"), CertificationRequest);
    forged.signature = AsnConvert.parse(
      fromPem(b.csrPem, "CERTIFICATE REQUEST"),
      CertificationRequest,
    ).signature;
    const cases = [
      "",
      "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
      p384Csr.toString("pem"),
      toPem(AsnConvert.serialize(forged), "CERTIFICATE REQUEST"),
    ];
    for (const csrPem of cases) {
      expect((await refusal(t.client().join({ token: scoped.token, csrPem, facts }))).code).toBe(
        Code.InvalidArgument,
      );
    }
    expect(await requestCount()).toBe(before);
    expect(await usesOf(scoped.id)).toBe(0);
  });

  it("refuses malformed node names, facts and capabilities with InvalidArgument", async () => {
    const scoped = await token();
    const key = await nodeKey();
    const bad = [
      { nodeName: "Bad Name" },
      { facts: { ...facts, os: "plan9" } },
      { capabilities: ["Can Route"] },
      { requestedRoles: ["BAD"] },
      { clusterId: "Not_A_Cluster" },
    ];
    for (const extra of bad) {
      expect(
        (await refusal(t.client().join({ token: scoped.token, csrPem: key.csrPem, facts, ...extra }))).code,
      ).toBe(Code.InvalidArgument);
    }
    expect(await usesOf(scoped.id)).toBe(0);
  });
});

describe("abuse limits", () => {
  it("rate-limits Join per token with ResourceExhausted and audits the refusals in a batch", async () => {
    const limited = await startEnrollmentUnderTest({
      FABRIC_CREDENTIAL_RATE_PER_SECOND: "0.1",
      FABRIC_CREDENTIAL_BURST: "3",
      FABRIC_ADDRESS_RATE_PER_SECOND: "1000",
      FABRIC_ADDRESS_BURST: "1000",
    });
    try {
      const created = await limited.client(limited.platformAdmin).createJoinToken({ clusterId: "c1" });
      const key = await nodeKey();
      const wrong = `${created.joinToken!.id}.${Buffer.alloc(32, 1).toString("base64url")}`;
      const codes: (Code | "ok")[] = [];
      for (let i = 0; i < 5; i++)
        codes.push(await codeOf(limited.client().join({ token: wrong, csrPem: key.csrPem })));
      expect(codes).toEqual([
        Code.Unauthenticated,
        Code.Unauthenticated,
        Code.Unauthenticated,
        Code.ResourceExhausted,
        Code.ResourceExhausted,
      ]);
      // Even the right secret is held back now: brute force through one token is bounded.
      expect(await codeOf(limited.client().join({ token: created.token, csrPem: key.csrPem }))).toBe(
        Code.ResourceExhausted,
      );
      // Refusals are audited in batches (one event per limited key) at the latest when the service stops.
      await limited.stopServices();
      const events = await listAudit(limited.pool, { action: "rate_limit.refuse" }, { limit: 10 });
      expect(events.map((e) => [e.targetType, e.targetId, e.details.refused])).toEqual([
        ["join-token", created.joinToken!.id, "3"],
      ]);
    } finally {
      await limited.close();
    }
  });

  it("rate-limits anonymous calls per source address, whatever token or developer they name", async () => {
    const limited = await startEnrollmentUnderTest({
      FABRIC_ADDRESS_RATE_PER_SECOND: "0.1",
      FABRIC_ADDRESS_BURST: "3",
      FABRIC_CREDENTIAL_RATE_PER_SECOND: "1000",
      FABRIC_CREDENTIAL_BURST: "1000",
    });
    try {
      const key = await nodeKey();
      const client = limited.client();
      const codes: (Code | "ok")[] = [];
      for (let i = 0; i < 3; i++) {
        const other = `${i}123456789abcdef.${Buffer.alloc(32, i).toString("base64url")}`;
        codes.push(await codeOf(client.join({ token: other, csrPem: key.csrPem })));
      }
      codes.push(await codeOf(client.join({ token: "x", csrPem: key.csrPem })));
      codes.push(
        await codeOf(client.bootstrapDeveloper({ developerId: "dev", pin: "123456", csrPem: key.csrPem })),
      );
      expect(codes).toEqual([
        Code.Unauthenticated,
        Code.Unauthenticated,
        Code.Unauthenticated,
        Code.ResourceExhausted,
        Code.ResourceExhausted,
      ]);
      // Authenticated callers are not subject to the anonymous limits.
      await limited.client(limited.platformAdmin).listJoinTokens({});
      await limited.stopServices();
      const events = await listAudit(limited.pool, { action: "rate_limit.refuse" }, { limit: 10 });
      expect(events.map((e) => [e.targetType, e.targetId, e.details.rpc, e.details.refused]).sort()).toEqual([
        ["address", "127.0.0.1", "BootstrapDeveloper", "1"],
        ["address", "127.0.0.1", "Join", "1"],
      ]);
    } finally {
      await limited.close();
    }
  });
});
