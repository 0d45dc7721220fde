import { createHash } from "node:crypto";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { listAudit } from "@fabric/platform";
import { JoinTokenState } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  asText,
  startEnrollmentUnderTest,
  refusal,
  type EnrollmentUnderTest,
} from "./fixtures/enrollment-under-test.js";

let t: EnrollmentUnderTest;

beforeAll(async () => {
  t = await startEnrollmentUnderTest({
    FABRIC_EXPIRED_TOKEN_RETENTION_MS: "1000",
    FABRIC_CLEANUP_INTERVAL_MS: "200",
  });
});
afterAll(async () => t?.close());

describe("CreateJoinToken", () => {
  it("returns <id>.<secret> once and stores only the secret's SHA-256", async () => {
    const admin = t.client(t.platformAdmin);
    const res = await admin.createJoinToken({
      clusterId: "c1",
      allowedRoles: ["relay-node", "entry-node"],
      maxUses: 3,
      description: "rack 12",
    });
    const [id, secret] = res.token.split(".") as [string, string];
    expect(id).toMatch(/^[0-9a-f]{16}$/);
    expect(Buffer.from(secret, "base64url")).toHaveLength(32);
    const token = res.joinToken!;
    expect(token).toMatchObject({
      id,
      clusterId: "c1",
      allowedRoles: ["relay-node", "entry-node"],
      maxUses: 3,
      uses: 0,
      autoApprove: false,
      description: "rack 12",
      state: JoinTokenState.ACTIVE,
      revoked: false,
    });
    // Default TTL is one hour.
    const ttl = Number(token.expiresAt!.seconds - token.createdAt!.seconds);
    expect(ttl).toBeGreaterThanOrEqual(3599);
    expect(ttl).toBeLessThanOrEqual(3601);

    const stored = await t.pool.query("SELECT * FROM join_tokens WHERE id = $1", [id]);
    const row = stored.rows[0] as Record<string, unknown>;
    expect(row.secret_sha256).toEqual(createHash("sha256").update(Buffer.from(secret, "base64url")).digest());
    expect(asText(row)).not.toContain(secret);

    const listed = await admin.listJoinTokens({ clusterId: "c1" });
    expect(asText(listed)).not.toContain(secret);
    expect(listed.joinTokens.map((x) => x.id)).toContain(id);

    const events = await listAudit(t.pool, { action: "join_token.create", targetId: id }, { limit: 5 });
    expect(events).toHaveLength(1);
    expect(asText(events)).not.toContain(secret);
  });

  it("refuses bad parameters with InvalidArgument and creates nothing", async () => {
    const admin = t.client(t.platformAdmin);
    const before = (await t.pool.query("SELECT count(*)::int AS n FROM join_tokens")).rows[0].n as number;
    const cases = [
      { clusterId: "" },
      { clusterId: "Bad_Cluster" },
      { clusterId: "c1", maxUses: 1001 },
      { clusterId: "c1", ttl: durationFromMs(25 * 3_600_000) },
      { clusterId: "c1", ttl: durationFromMs(500) },
      { clusterId: "c1", allowedRoles: ["Not A Role"] },
      { clusterId: "c1", description: "x".repeat(257) },
    ];
    for (const req of cases) {
      const err = await refusal(admin.createJoinToken(req));
      expect(err.code, asText(req)).toBe(Code.InvalidArgument);
    }
    expect((await t.pool.query("SELECT count(*)::int AS n FROM join_tokens")).rows[0].n).toBe(before);
  });

  it("accepts the maximum TTL of 24 hours and max_uses 0 as single use", async () => {
    const res = await t.client(t.platformAdmin).createJoinToken({
      clusterId: "c1",
      ttl: durationFromMs(24 * 3_600_000),
    });
    expect(res.joinToken!.maxUses).toBe(1);
  });
});

describe("who may manage tokens", () => {
  it("lets a cluster-admin manage its own cluster's tokens only", async () => {
    const own = t.client(await t.clusterAdmin("c2"));
    const created = await own.createJoinToken({ clusterId: "c2" });
    expect(created.joinToken!.createdBy!.id).toBe("ca-c2");

    const foreign = await refusal(own.createJoinToken({ clusterId: "c1" }));
    expect(foreign.code).toBe(Code.PermissionDenied);
    expect(foreign.rawMessage).toContain('administers cluster "c2"');

    // Listing is narrowed to its cluster; asking for another is refused.
    const listed = await own.listJoinTokens({});
    expect(listed.joinTokens.length).toBeGreaterThan(0);
    expect(new Set(listed.joinTokens.map((x) => x.clusterId))).toEqual(new Set(["c2"]));
    expect((await refusal(own.listJoinTokens({ clusterId: "c1" }))).code).toBe(Code.PermissionDenied);

    const c1Token = await t.client(t.platformAdmin).createJoinToken({ clusterId: "c1" });
    expect((await refusal(own.revokeJoinToken({ tokenId: c1Token.joinToken!.id }))).code).toBe(
      Code.PermissionDenied,
    );
    const refused = await listAudit(t.pool, { action: "join_token.revoke", actorId: "ca-c2" }, { limit: 5 });
    expect(refused.map((e) => e.outcome)).toEqual(["refused"]);
  });

  it("refuses org-admins, nodes, developers and callers without a certificate", async () => {
    const callers = [
      await t.orgAdmin("o1"),
      await t.pki.issue({ kind: "node", id: "n1", cluster: "c1" }),
      await t.pki.issue({ kind: "user", id: "dev1" }),
    ];
    for (const creds of callers) {
      expect((await refusal(t.client(creds).createJoinToken({ clusterId: "c1" }))).code).toBe(
        Code.PermissionDenied,
      );
    }
    expect((await refusal(t.client().createJoinToken({ clusterId: "c1" }))).code).toBe(Code.Unauthenticated);
    expect((await refusal(t.client().listJoinTokens({}))).code).toBe(Code.Unauthenticated);
  });
});

describe("ListJoinTokens", () => {
  it("pages newest first and filters by state", async () => {
    const admin = t.client(t.platformAdmin);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await admin.createJoinToken({ clusterId: "paged" })).joinToken!.id);
    const first = await admin.listJoinTokens({ clusterId: "paged", pageSize: 2 });
    const second = await admin.listJoinTokens({
      clusterId: "paged",
      pageSize: 2,
      pageToken: first.nextPageToken,
    });
    const third = await admin.listJoinTokens({
      clusterId: "paged",
      pageSize: 2,
      pageToken: second.nextPageToken,
    });
    expect([...first.joinTokens, ...second.joinTokens, ...third.joinTokens].map((x) => x.id)).toEqual(
      [...ids].reverse(),
    );
    expect(third.nextPageToken).toBe("");
    expect((await refusal(admin.listJoinTokens({ pageToken: "garbage" }))).code).toBe(Code.InvalidArgument);
    expect((await refusal(admin.listJoinTokens({ pageSize: -1 }))).code).toBe(Code.InvalidArgument);

    await admin.revokeJoinToken({ tokenId: ids[0]! });
    const revoked = await admin.listJoinTokens({ clusterId: "paged", state: JoinTokenState.REVOKED });
    expect(revoked.joinTokens.map((x) => x.id)).toEqual([ids[0]]);
    const active = await admin.listJoinTokens({ clusterId: "paged", state: JoinTokenState.ACTIVE });
    expect(active.joinTokens).toHaveLength(4);
  });
});

describe("RevokeJoinToken", () => {
  it("revokes once, succeeds again without change, and refuses full tokens and unknown ids", async () => {
    const admin = t.client(t.platformAdmin);
    const created = await admin.createJoinToken({ clusterId: "c1" });
    const id = created.joinToken!.id;
    const first = await admin.revokeJoinToken({ tokenId: id });
    expect(first.joinToken).toMatchObject({ state: JoinTokenState.REVOKED, revoked: true });
    const again = await admin.revokeJoinToken({ tokenId: id });
    expect(again.joinToken!.revokedAt).toEqual(first.joinToken!.revokedAt);
    expect(await listAudit(t.pool, { action: "join_token.revoke", targetId: id }, { limit: 5 })).toHaveLength(
      1,
    );

    const full = await refusal(admin.revokeJoinToken({ tokenId: created.token }));
    expect(full.code).toBe(Code.InvalidArgument);
    expect(full.rawMessage).not.toContain(created.token.split(".")[1]);
    const audited = await listAudit(t.pool, { action: "join_token.revoke" }, { limit: 50 });
    expect(asText(audited)).not.toContain(created.token.split(".")[1]);
    expect((await refusal(admin.revokeJoinToken({ tokenId: "0123456789abcdef" }))).code).toBe(Code.NotFound);
  });
});

describe("cleanup", () => {
  it("deletes tokens expired longer than the retention period, with audit", async () => {
    const admin = t.client(t.platformAdmin);
    const created = await admin.createJoinToken({ clusterId: "c1", ttl: durationFromMs(1_000) });
    const id = created.joinToken!.id;
    await expect
      .poll(
        async () =>
          (await admin.listJoinTokens({ state: JoinTokenState.EXPIRED })).joinTokens.map((x) => x.id),
        {
          timeout: 5_000,
        },
      )
      .toContain(id);
    await expect
      .poll(async () => (await t.pool.query("SELECT 1 FROM join_tokens WHERE id = $1", [id])).rowCount, {
        timeout: 10_000,
      })
      .toBe(0);
    const events = await listAudit(
      t.pool,
      { action: "join_token.delete_expired", targetId: id },
      { limit: 5 },
    );
    expect(events).toHaveLength(1);
  });
});
