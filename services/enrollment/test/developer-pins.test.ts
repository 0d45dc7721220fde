import { Code } from "@connectrpc/connect";
import { inspectCertificate, listAudit, verifyChain } from "@fabric/platform";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyDeveloperBundleMac } from "../src/protocol.js";
import {
  asText,
  nodeKey,
  refusal,
  startEnrollmentUnderTest,
  storedState,
  type EnrollmentUnderTest,
} from "./fixtures/enrollment-under-test.js";

let t: EnrollmentUnderTest;

beforeAll(async () => {
  t = await startEnrollmentUnderTest({
    FABRIC_PUBLIC_ROUTER_URL: "https://router.fabric.test:7403",
    FABRIC_ADDRESS_RATE_PER_SECOND: "1000",
    FABRIC_ADDRESS_BURST: "1000",
    FABRIC_CREDENTIAL_RATE_PER_SECOND: "1000",
    FABRIC_CREDENTIAL_BURST: "1000",
  });
});
afterAll(async () => t?.close());

describe("IssueDeveloperPin", () => {
  it("returns a 6-digit PIN once, valid 24 hours, stored only as an scrypt hash", async () => {
    const res = await t
      .client(t.platformAdmin)
      .issueDeveloperPin({ developerId: "01", organizationId: "acme" });
    expect(res.pin).toMatch(/^\d{6}$/);
    const hours = Number(res.expiresAt!.seconds - BigInt(Math.floor(Date.now() / 1000))) / 3600;
    expect(hours).toBeGreaterThan(23.9);
    expect(hours).toBeLessThanOrEqual(24);
    const { rows } = await t.pool.query("SELECT * FROM developer_pins WHERE developer_id = '01'");
    expect(rows[0].pin_hash).toMatch(/^scrypt\$16384\$8\$1\$/);
    expect(asText(rows)).not.toContain(res.pin);
    const events = await listAudit(t.pool, { action: "developer_pin.issue", targetId: "01" }, { limit: 5 });
    expect(events).toHaveLength(1);
    expect(asText(events)).not.toContain(res.pin);
  });

  it("lets an org-admin issue PINs for its own organization only; refuses cluster-admins and others", async () => {
    const orgAdmin = t.client(await t.orgAdmin("acme"));
    await orgAdmin.issueDeveloperPin({ developerId: "acme-dev" });
    const { rows } = await t.pool.query(
      "SELECT organization_id FROM developer_pins WHERE developer_id = 'acme-dev'",
    );
    expect(rows[0].organization_id).toBe("acme");
    const other = await refusal(orgAdmin.issueDeveloperPin({ developerId: "x", organizationId: "globex" }));
    expect(other.code).toBe(Code.PermissionDenied);
    for (const creds of [await t.clusterAdmin("c1"), await t.pki.issue({ kind: "user", id: "dev1" })]) {
      expect((await refusal(t.client(creds).issueDeveloperPin({ developerId: "y" }))).code).toBe(
        Code.PermissionDenied,
      );
    }
    expect((await refusal(t.client().issueDeveloperPin({ developerId: "y" }))).code).toBe(
      Code.Unauthenticated,
    );
    expect((await refusal(t.client(t.platformAdmin).issueDeveloperPin({ developerId: "Not OK" }))).code).toBe(
      Code.InvalidArgument,
    );
  });
});

describe("BootstrapDeveloper", () => {
  it("exchanges the PIN and a CSR for a user certificate, the bundle, its MAC and settings", async () => {
    const { pin } = await t
      .client(t.platformAdmin)
      .issueDeveloperPin({ developerId: "02", organizationId: "acme", defaultClusterId: "c1" });
    const key = await nodeKey();
    const res = await t.client().bootstrapDeveloper({ developerId: "02", pin, csrPem: key.csrPem });
    const cert = inspectCertificate(res.certificatePem);
    expect(cert.identity).toMatchObject({ kind: "user", id: "02" });
    expect(cert.organization).toBe("acme");
    expect(cert.grant).toBe("developer");
    expect(verifyChain(res.certificatePem, res.chainPem, res.caBundlePem)).toBe(true);
    const days = (cert.notAfter.getTime() - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(29.9);
    expect(days).toBeLessThanOrEqual(30);
    // The CLI authenticates the bundle with the PIN it was given; any other PIN or bundle fails.
    expect(verifyDeveloperBundleMac(pin, "02", res.caBundlePem, res.caBundleMac)).toBe(true);
    const otherPin = pin === "000000" ? "000001" : "000000";
    expect(verifyDeveloperBundleMac(otherPin, "02", res.caBundlePem, res.caBundleMac)).toBe(false);
    expect(verifyDeveloperBundleMac(pin, "02", `${res.caBundlePem}x`, res.caBundleMac)).toBe(false);
    expect(res.settings).toMatchObject({
      caEndpoint: t.peers.caUrl,
      enrollmentEndpoint: t.url,
      registryEndpoint: t.peers.registryUrl,
      routerEndpoint: "https://router.fabric.test:7403",
      trustDomain: "fabric.test",
      defaultClusterId: "c1",
      organizationId: "acme",
    });

    // Replay: the PIN is single use.
    const replay = await refusal(
      t.client().bootstrapDeveloper({ developerId: "02", pin, csrPem: key.csrPem }),
    );
    expect(replay.code).toBe(Code.FailedPrecondition);
    expect(replay.rawMessage).not.toContain(pin);
    const audited = await listAudit(t.pool, { action: "developer.bootstrap", targetId: "02" }, { limit: 5 });
    expect(audited.map((e) => e.outcome)).toEqual(["refused", "success"]);
    expect(asText(audited)).not.toContain(pin);
  });

  it("locks the PIN after five wrong attempts, even against the right PIN, until a new PIN is issued", async () => {
    const admin = t.client(t.platformAdmin);
    const { pin } = await admin.issueDeveloperPin({ developerId: "03" });
    const key = await nodeKey();
    const wrong = pin === "111111" ? "222222" : "111111";
    const messages: string[] = [];
    for (let i = 0; i < 5; i++) {
      const err = await refusal(
        t.client().bootstrapDeveloper({ developerId: "03", pin: wrong, csrPem: key.csrPem }),
      );
      expect(err.code).toBe(Code.Unauthenticated);
      messages.push(err.rawMessage);
    }
    expect(messages[0]).toMatch(/4 attempt\(s\) left/);
    expect(messages[4]).toMatch(/now locked/);
    const locked = await refusal(
      t.client().bootstrapDeveloper({ developerId: "03", pin, csrPem: key.csrPem }),
    );
    expect(locked.code).toBe(Code.ResourceExhausted);
    const refused = await listAudit(t.pool, { action: "developer.bootstrap", targetId: "03" }, { limit: 10 });
    expect(refused.filter((e) => e.outcome === "refused")).toHaveLength(6);

    const fresh = await admin.issueDeveloperPin({ developerId: "03" });
    const res = await t
      .client()
      .bootstrapDeveloper({ developerId: "03", pin: fresh.pin, csrPem: key.csrPem });
    expect(inspectCertificate(res.certificatePem).identity!.id).toBe("03");
  });

  it("refuses unknown developers, malformed PINs and bad CSRs without using the PIN", async () => {
    const { pin } = await t.client(t.platformAdmin).issueDeveloperPin({ developerId: "04" });
    const key = await nodeKey();
    expect(
      (await refusal(t.client().bootstrapDeveloper({ developerId: "nobody", pin, csrPem: key.csrPem }))).code,
    ).toBe(Code.Unauthenticated);
    expect(
      (await refusal(t.client().bootstrapDeveloper({ developerId: "04", pin: "12", csrPem: key.csrPem })))
        .code,
    ).toBe(Code.Unauthenticated);
    expect(
      (await refusal(t.client().bootstrapDeveloper({ developerId: "04", pin, csrPem: "nope" }))).code,
    ).toBe(Code.InvalidArgument);
    // None of those consumed or locked the PIN.
    const res = await t.client().bootstrapDeveloper({ developerId: "04", pin, csrPem: key.csrPem });
    expect(res.certificatePem).toContain("BEGIN CERTIFICATE");
  });

  it("keeps the PIN usable when the CA is down", async () => {
    const { pin } = await t.client(t.platformAdmin).issueDeveloperPin({ developerId: "05" });
    const key = await nodeKey();
    t.peers.caMode = "unavailable";
    try {
      const err = await refusal(
        t.client().bootstrapDeveloper({ developerId: "05", pin, csrPem: key.csrPem }),
      );
      expect(err.code).toBe(Code.Unavailable);
    } finally {
      t.peers.caMode = "ok";
    }
    await t.client().bootstrapDeveloper({ developerId: "05", pin, csrPem: key.csrPem });
  });

  it("refuses an expired PIN with FailedPrecondition", async () => {
    const { pin } = await t.client(t.platformAdmin).issueDeveloperPin({ developerId: "06" });
    await t.pool.query(
      "UPDATE developer_pins SET expires_at = now() - interval '1 second' WHERE developer_id = '06'",
    );
    const key = await nodeKey();
    const err = await refusal(t.client().bootstrapDeveloper({ developerId: "06", pin, csrPem: key.csrPem }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toMatch(/expired/);
  });
});

describe("a developer id stays with its organization", () => {
  it("refuses another organization's admin a PIN for it, and keeps the pending PIN usable", async () => {
    const { pin } = await t.client(await t.orgAdmin("owner-org")).issueDeveloperPin({ developerId: "mika" });
    const before = await storedState(t.pool);
    const intruder = t.client(await t.orgAdmin("intruder-org"));
    for (const organizationId of ["", "intruder-org"]) {
      const err = await refusal(intruder.issueDeveloperPin({ developerId: "mika", organizationId }));
      expect(err.code).toBe(Code.PermissionDenied);
      // Only that the id is taken: not by whom.
      expect(err.rawMessage).not.toContain("owner-org");
    }
    expect(await storedState(t.pool)).toBe(before);
    const key = await nodeKey();
    const res = await t.client().bootstrapDeveloper({ developerId: "mika", pin, csrPem: key.csrPem });
    expect(inspectCertificate(res.certificatePem).organization).toBe("owner-org");
    // Bootstrapped, the id is still bound: the intruder cannot mint a second certificate for it.
    expect((await refusal(intruder.issueDeveloperPin({ developerId: "mika" }))).code).toBe(
      Code.PermissionDenied,
    );
  });

  it("keeps the binding against platform-admins too, who re-issue for the developer's organization", async () => {
    const admin = t.client(t.platformAdmin);
    await admin.issueDeveloperPin({ developerId: "noor", organizationId: "first-org" });
    const moved = await refusal(
      admin.issueDeveloperPin({ developerId: "noor", organizationId: "second-org" }),
    );
    expect(moved.code).toBe(Code.FailedPrecondition);
    const { pin } = await admin.issueDeveloperPin({ developerId: "noor" });
    const res = await t
      .client()
      .bootstrapDeveloper({ developerId: "noor", pin, csrPem: (await nodeKey()).csrPem });
    expect(inspectCertificate(res.certificatePem).organization).toBe("first-org");
    // A developer of no organization is bound to none: an org-admin cannot claim it.
    await admin.issueDeveloperPin({ developerId: "loner" });
    const claimed = await refusal(
      t.client(await t.orgAdmin("first-org")).issueDeveloperPin({ developerId: "loner" }),
    );
    expect(claimed.code).toBe(Code.PermissionDenied);
  });
});
