import { X509Certificate, createPublicKey } from "node:crypto";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import {
  buildCsr,
  generateP256KeyPair,
  inspectCertificate,
  listAudit,
  type TlsCredentials,
} from "@fabric/platform";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  collect,
  joinNode,
  nodeKey,
  refusal,
  startEnrollmentUnderTest,
  type EnrollmentUnderTest,
} from "./fixtures/enrollment-under-test.js";

let t: EnrollmentUnderTest;

beforeAll(async () => {
  t = await startEnrollmentUnderTest();
});
afterAll(async () => t?.close());

/** A renewal CSR for a fresh key whose subject tries to claim something else (it must be ignored). */
async function rekey(): Promise<{ privateKeyPem: string; csrPem: string }> {
  const key = generateP256KeyPair();
  return {
    privateKeyPem: key.privateKeyPem,
    csrPem: await buildCsr(key.privateKeyPem, "platform-admin-please"),
  };
}

const spkiOf = (pem: string) => new X509Certificate(pem).publicKey.export({ type: "spki", format: "pem" });

describe("Renew", () => {
  it("renews a node with a fresh key and the same subject, taken from the certificate, not the CSR", async () => {
    // Given 30 days (a renewal never grants more than the presented certificate's lifetime).
    const current = await t.pki.issue(
      { kind: "node", id: "node-a", cluster: "c1", grant: "relay-node,entry-node" },
      { notAfter: new Date(Date.now() + 30 * 86_400_000) },
    );
    const key = await rekey();
    const res = await t.client(current).renew({ csrPem: key.csrPem });
    const before = inspectCertificate(current.certificatePem);
    const after = inspectCertificate(res.certificatePem);
    expect(after.identity).toEqual(before.identity);
    expect([after.grant, after.clusterExtension, after.kindExtension]).toEqual([
      "relay-node,entry-node",
      "c1",
      "node",
    ]);
    expect(after.subjectCommonName).toBe("node-a");
    expect(after.serialHex).toBe(res.serial);
    expect(after.serialHex).not.toBe(before.serialHex);
    expect(spkiOf(res.certificatePem)).toBe(
      createPublicKey(key.privateKeyPem).export({ type: "spki", format: "pem" }),
    );
    // The default node lifetime (30 days).
    expect((after.notAfter.getTime() - Date.now()) / 86_400_000).toBeGreaterThan(29.9);
    const sign = t.peers.signRequests.at(-1)!;
    expect(sign.authorizationRef).toBe(`renewal/${before.serialHex}`);
    const events = await listAudit(t.pool, { action: "identity.renew", targetId: "node-a" }, { limit: 5 });
    expect(events.map((e) => [e.outcome, e.details.previousSerial])).toEqual([["success", before.serialHex]]);

    // The renewed identity renews in turn.
    const renewed: TlsCredentials = {
      ...current,
      privateKeyPem: key.privateKeyPem,
      certificatePem: res.certificatePem,
    };
    const again = await t
      .client(renewed)
      .renew({ csrPem: (await rekey()).csrPem, requestedLifetime: durationFromMs(3_600_000) });
    const third = inspectCertificate(again.certificatePem);
    expect(third.identity).toEqual(before.identity);
    expect((third.notAfter.getTime() - Date.now()) / 60_000).toBeLessThanOrEqual(60);
  });

  it("renews developers and admins with their organization, cluster and grant", async () => {
    const dev = await t.pki.issue({ kind: "user", id: "dev-7", organization: "acme", grant: "developer" });
    const devCert = inspectCertificate(
      (await t.client(dev).renew({ csrPem: (await rekey()).csrPem })).certificatePem,
    );
    expect([devCert.identity!.kind, devCert.organization, devCert.grant]).toEqual([
      "user",
      "acme",
      "developer",
    ]);
    const admin = await t.clusterAdmin("c9");
    const adminCert = inspectCertificate(
      (await t.client(admin).renew({ csrPem: (await rekey()).csrPem })).certificatePem,
    );
    expect([adminCert.identity!.kind, adminCert.grant, adminCert.clusterExtension]).toEqual([
      "admin",
      "cluster-admin",
      "c9",
    ]);
  });

  it("refuses services (they renew through the CA) and callers without a certificate", async () => {
    const registry = await t.pki.issue({ kind: "service", id: "registry" });
    expect((await refusal(t.client(registry).renew({ csrPem: (await rekey()).csrPem }))).code).toBe(
      Code.PermissionDenied,
    );
    expect((await refusal(t.client().renew({ csrPem: (await rekey()).csrPem }))).code).toBe(
      Code.Unauthenticated,
    );
  });

  it("refuses a bad CSR with InvalidArgument", async () => {
    const current = await t.pki.issue({ kind: "node", id: "node-b", cluster: "c1" });
    expect((await refusal(t.client(current).renew({ csrPem: "garbage" }))).code).toBe(Code.InvalidArgument);
  });

  it("refuses an expired certificate: it must re-enroll", async () => {
    const expired = await t.pki.issue(
      { kind: "node", id: "node-old", cluster: "c1" },
      { notBefore: new Date(Date.now() - 7_200_000), notAfter: new Date(Date.now() - 60_000) },
    );
    const err = await refusal(t.client(expired).renew({ csrPem: (await rekey()).csrPem }));
    expect(err.code).toBe(Code.Unauthenticated);
    expect(err.rawMessage).toMatch(/expired/i);
  });

  it("refuses a certificate within one second of its revocation", async () => {
    const current = await t.pki.issue({ kind: "node", id: "node-r", cluster: "c1" });
    const serial = inspectCertificate(current.certificatePem).serialHex;
    const client = t.client(current);
    await client.renew({ csrPem: (await rekey()).csrPem });
    const revokedAt = Date.now();
    t.peers.revoke(serial, inspectCertificate(current.certificatePem).notAfter);
    let err;
    for (;;) {
      err = await refusal(client.renew({ csrPem: (await rekey()).csrPem })).catch(() => undefined);
      if (err) break;
    }
    expect(Date.now() - revokedAt).toBeLessThan(1_000);
    expect(err.code).toBe(Code.Unauthenticated);
    expect(err.rawMessage).toMatch(/revoked/);
  });

  it("refuses identities older than the maximum enrollment age and caps renewals at that age", async () => {
    const replica = await t.startReplica({ FABRIC_MAX_ENROLLMENT_AGE_MS: "600000" });
    try {
      // Issued offline 20 minutes ago: first seen at renewal, its notBefore counts as the enrollment.
      const old = await t.pki.issue(
        { kind: "node", id: "node-aged", cluster: "c1" },
        { notBefore: new Date(Date.now() - 20 * 60_000), notAfter: new Date(Date.now() + 3_600_000) },
      );
      const err = await refusal(t.clientOf(replica.url, old).renew({ csrPem: (await rekey()).csrPem }));
      expect(err.code).toBe(Code.FailedPrecondition);
      expect(err.rawMessage).toMatch(/enroll again/);

      // A developer bootstrapped just now renews, but never past 10 minutes after that enrollment.
      const { pin } = await t.client(t.platformAdmin).issueDeveloperPin({ developerId: "young" });
      const key = await nodeKey();
      const boot = await t.client().bootstrapDeveloper({ developerId: "young", pin, csrPem: key.csrPem });
      const dev: TlsCredentials = {
        privateKeyPem: key.privateKeyPem,
        certificatePem: boot.certificatePem,
        chainPem: boot.chainPem,
        caBundlePem: boot.caBundlePem,
      };
      const renewed = await t.clientOf(replica.url, dev).renew({ csrPem: (await rekey()).csrPem });
      const notAfter = inspectCertificate(renewed.certificatePem).notAfter.getTime();
      expect(notAfter).toBeLessThanOrEqual(Date.now() + 600_000);
    } finally {
      await replica.close();
    }
  });
});

describe("Renew grants no more than the identity was given", () => {
  const lifetimeOf = (pem: string) => {
    const c = inspectCertificate(pem);
    return c.notAfter.getTime() - c.notBefore.getTime();
  };
  const renewedAs = (creds: TlsCredentials, key: { privateKeyPem: string }, certificatePem: string) => ({
    ...creds,
    privateKeyPem: key.privateKeyPem,
    certificatePem,
  });

  it("renews a node approved for one minute for one minute, however long it asks for, every time", async () => {
    const node = await joinNode(t, "c1");
    await t.client(t.platformAdmin).approveJoinRequest({
      joinRequestId: node.id,
      certificateLifetime: durationFromMs(60_000),
    });
    let creds: TlsCredentials = await collect(t, node);
    for (let round = 0; round < 3; round++) {
      const key = await rekey();
      const res = await t
        .client(creds)
        .renew({ csrPem: key.csrPem, requestedLifetime: durationFromMs(90 * 86_400_000) });
      // The stand-in CA starts certificates one minute early, as the CA does: one minute from now.
      expect(inspectCertificate(res.certificatePem).notAfter.getTime()).toBeLessThanOrEqual(
        Date.now() + 60_000,
      );
      creds = renewedAs(creds, key, res.certificatePem);
    }
  });

  it("caps an identity enrolled elsewhere at its certificate's lifetime, without creeping up", async () => {
    const issued = await t.pki.issue(
      { kind: "admin", id: "offline-admin", grant: "platform-admin" },
      { notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 3_600_000) },
    );
    const given = lifetimeOf(issued.certificatePem);
    let creds = issued;
    for (let round = 0; round < 3; round++) {
      const key = await rekey();
      const res = await t.client(creds).renew({ csrPem: key.csrPem });
      expect(inspectCertificate(res.certificatePem).notAfter.getTime()).toBeLessThanOrEqual(
        Date.now() + given,
      );
      creds = renewedAs(creds, key, res.certificatePem);
    }
  });
});
