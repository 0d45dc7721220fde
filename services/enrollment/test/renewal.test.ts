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
    const current = await t.pki.issue({
      kind: "node",
      id: "node-a",
      cluster: "c1",
      grant: "relay-node,entry-node",
    });
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
