import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { fromPem, listAudit, toPem, x509 } from "@fabric/platform";
import { CertificationRequest } from "@peculiar/asn1-csr";
import { AsnConvert } from "@peculiar/asn1-schema";
import { JoinRequestState } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signWaitForApproval } from "../src/protocol.js";
import {
  asText,
  codeOf,
  joinNode,
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
  it("rate-limits wrong secrets per token with ResourceExhausted, audited in a batch, never the right one", async () => {
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
      // The right secret is never held back by its token's failures: knowing a token id (it is in
      // listings and audit) must not let anyone lock out the node holding the token.
      expect(await codeOf(limited.client().join({ token: created.token, csrPem: key.csrPem }))).toBe("ok");
      // Refusals are audited in batches (one event per limited key) at the latest when the service stops.
      await limited.stopServices();
      const events = await listAudit(limited.pool, { action: "rate_limit.refuse" }, { limit: 10 });
      expect(events.map((e) => [e.targetType, e.targetId, e.details.refused])).toEqual([
        ["join-token", created.joinToken!.id, "2"],
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
  it("lets the holder of a join request wait however many wrong signatures strangers send for it", async () => {
    const limited = await startEnrollmentUnderTest({
      FABRIC_CREDENTIAL_RATE_PER_SECOND: "0.1",
      FABRIC_CREDENTIAL_BURST: "2",
      FABRIC_ADDRESS_RATE_PER_SECOND: "1000",
      FABRIC_ADDRESS_BURST: "1000",
    });
    try {
      const node = await joinNode(limited, "c1");
      const stranger = (await nodeKey()).privateKeyPem;
      const first = async (signature: Uint8Array) => {
        for await (const res of limited.client().waitForApproval({ joinRequestId: node.id, signature }))
          return res.state;
      };
      const codes: (Code | "ok")[] = [];
      for (let i = 0; i < 4; i++) {
        codes.push(await codeOf(first(signWaitForApproval(stranger, node.id, node.challenge))));
      }
      expect(codes).toEqual([
        Code.Unauthenticated,
        Code.Unauthenticated,
        Code.ResourceExhausted,
        Code.ResourceExhausted,
      ]);
      expect(await first(signWaitForApproval(node.privateKeyPem, node.id, node.challenge))).toBe(
        JoinRequestState.PENDING,
      );
    } finally {
      await limited.close();
    }
  });

  it("spends an address's budget only on failures: calls that prove their credential give it back", async () => {
    const limited = await startEnrollmentUnderTest({
      FABRIC_ADDRESS_RATE_PER_SECOND: "0.1",
      FABRIC_ADDRESS_BURST: "3",
      FABRIC_CREDENTIAL_RATE_PER_SECOND: "1000",
      FABRIC_CREDENTIAL_BURST: "1000",
    });
    try {
      const admin = limited.client(limited.platformAdmin);
      const codes: (Code | "ok")[] = [];
      for (let i = 0; i < 5; i++) {
        const created = await admin.createJoinToken({ clusterId: "c1" });
        codes.push(
          await codeOf(limited.client().join({ token: created.token, csrPem: (await nodeKey()).csrPem })),
        );
      }
      const { pin } = await admin.issueDeveloperPin({ developerId: "fleet-dev" });
      codes.push(
        await codeOf(
          limited
            .client()
            .bootstrapDeveloper({ developerId: "fleet-dev", pin, csrPem: (await nodeKey()).csrPem }),
        ),
      );
      expect(codes).toEqual(["ok", "ok", "ok", "ok", "ok", "ok"]);
      const wrong = `${"f".repeat(16)}.${Buffer.alloc(32, 3).toString("base64url")}`;
      const failures: (Code | "ok")[] = [];
      for (let i = 0; i < 4; i++) {
        failures.push(
          await codeOf(limited.client().join({ token: wrong, csrPem: (await nodeKey()).csrPem })),
        );
      }
      expect(failures).toEqual([
        Code.Unauthenticated,
        Code.Unauthenticated,
        Code.Unauthenticated,
        Code.ResourceExhausted,
      ]);
    } finally {
      await limited.close();
    }
  });

  it("limits a developer id by its PIN lockout only: strangers' wrong PINs short of it keep the right one working", async () => {
    const limited = await startEnrollmentUnderTest({
      FABRIC_CREDENTIAL_RATE_PER_SECOND: "0.1",
      FABRIC_CREDENTIAL_BURST: "2",
      FABRIC_ADDRESS_RATE_PER_SECOND: "1000",
      FABRIC_ADDRESS_BURST: "1000",
    });
    try {
      const { pin } = await limited
        .client(limited.platformAdmin)
        .issueDeveloperPin({ developerId: "target" });
      const wrong = pin === "000000" ? "000001" : "000000";
      const key = await nodeKey();
      for (let i = 0; i < 4; i++) {
        expect(
          await codeOf(
            limited.client().bootstrapDeveloper({ developerId: "target", pin: wrong, csrPem: key.csrPem }),
          ),
        ).toBe(Code.Unauthenticated);
      }
      expect(
        await codeOf(limited.client().bootstrapDeveloper({ developerId: "target", pin, csrPem: key.csrPem })),
      ).toBe("ok");
    } finally {
      await limited.close();
    }
  });
});

describe("text from anonymous joiners and developers", () => {
  // What a terminal acts on: ESC (CSI, OSC), a C1 CSI, DEL, a bidi override and isolate, a line separator.
  const hostile = [
    "\u001b]0;owned\u0007",
    "\u009b2J",
    "x\u007f",
    "\u202Eexe.txt",
    "\u2066eu",
    "a\u2028b",
    "a\nb",
  ];

  it("refuses control characters in every free-text fact with InvalidArgument naming the field", async () => {
    const scoped = await token();
    const key = await nodeKey();
    const before = await requestCount();
    const fields: [string, (bad: string) => object][] = [
      ["facts.hostname", (bad) => ({ facts: { ...facts, hostname: bad } })],
      ["facts.os_version", (bad) => ({ facts: { ...facts, osVersion: bad } })],
      ["facts.arch", (bad) => ({ facts: { ...facts, arch: bad } })],
      ["facts.agent_version", (bad) => ({ facts: { ...facts, agentVersion: bad } })],
      ["facts.region", (bad) => ({ facts: { ...facts, region: bad } })],
      ["facts.addresses", (bad) => ({ facts: { ...facts, addresses: ["10.0.0.1:7000", bad] } })],
      ["facts.labels keys", (bad) => ({ facts: { ...facts, labels: { [bad]: "v" } } })],
      ['facts.labels["site"]', (bad) => ({ facts: { ...facts, labels: { site: bad } } })],
    ];
    for (const [field, make] of fields) {
      for (const bad of hostile) {
        const err = await refusal(t.client().join({ token: scoped.token, csrPem: key.csrPem, ...make(bad) }));
        expect([err.code, err.rawMessage], `${field} ${JSON.stringify(bad)}`).toEqual([
          Code.InvalidArgument,
          expect.stringContaining(`${field} contains a control character`),
        ]);
      }
    }
    const csr = await refusal(
      t.client().join({ token: scoped.token, csrPem: `\u001b[2J${key.csrPem}`, facts }),
    );
    expect([csr.code, csr.rawMessage]).toEqual([Code.InvalidArgument, expect.stringContaining("csr_pem")]);
    expect(await requestCount()).toBe(before);
    expect(await usesOf(scoped.id)).toBe(0);
    // Plain Unicode is fine.
    const ok = await t.client().join({
      token: scoped.token,
      csrPem: key.csrPem,
      facts: { ...facts, osVersion: "Ubuntu 24.04 « Noble »", labels: { site: "Казань-dc1" } },
    });
    expect(ok.state).toBe(JoinRequestState.PENDING);
  });

  it("refuses them in a bootstrapping developer's CSR, leaving the PIN usable", async () => {
    const { pin } = await t.client(t.platformAdmin).issueDeveloperPin({ developerId: "escaper" });
    const key = await nodeKey();
    const err = await refusal(
      t.client().bootstrapDeveloper({ developerId: "escaper", pin, csrPem: `${key.csrPem}\u001b]0;x\u0007` }),
    );
    expect([err.code, err.rawMessage]).toEqual([Code.InvalidArgument, expect.stringContaining("csr_pem")]);
    await t.client().bootstrapDeveloper({ developerId: "escaper", pin, csrPem: key.csrPem });
  });

  it("refuses them in what admins write for others to read: token descriptions, rejection reasons", async () => {
    const admin = t.client(t.platformAdmin);
    const description = await refusal(
      admin.createJoinToken({ clusterId: "c1", description: "\u001b[2Jrack 12" }),
    );
    expect([description.code, description.rawMessage]).toEqual([
      Code.InvalidArgument,
      expect.stringContaining("description contains a control character"),
    ]);
    const node = await joinNode(t, "c1");
    const reason = await refusal(admin.rejectJoinRequest({ joinRequestId: node.id, reason: "no\u009b2J" }));
    expect(reason.code).toBe(Code.InvalidArgument);
    expect((await admin.getJoinRequest({ joinRequestId: node.id })).joinRequest!.state).toBe(
      JoinRequestState.PENDING,
    );
  });
});
