// Enrollment end to end: real CA, registry and enrollment processes on a real Postgres, real mTLS
// (test/harness/fabric.ts).
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, type Client } from "@connectrpc/connect";
import {
  buildSpiffeId,
  createPool,
  createRpcClient,
  inspectCertificate,
  type Pool,
  type TlsCredentials,
} from "@fabric/platform";
import { CaService, RevocationReason } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import {
  EnrollmentService,
  JoinRequestState,
  type WaitForApprovalResponse,
} from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFabric, type Fabric } from "../../../test/harness/fabric.js";
import { signWaitForApproval, verifyDeveloperBundleMac } from "../src/protocol.js";
import { codeOf, nodeKey, refusal } from "./fixtures/enrollment-under-test.js";

let fabric: Fabric;
let pool: Pool;
let anonymous: Client<typeof EnrollmentService>;
let admin: Client<typeof EnrollmentService>;
const work = mkdtempSync(join(tmpdir(), "fabric-enrollment-e2e-"));

beforeAll(async () => {
  fabric = await startFabric({
    services: ["ca", "registry", "enrollment"],
    env: {
      enrollment: {
        FABRIC_RECONCILE_INTERVAL_MS: "500",
        // 100 concurrent joins come from one address: the per-address limit is not what is tested here.
        FABRIC_ADDRESS_RATE_PER_SECOND: "1000",
        FABRIC_ADDRESS_BURST: "1000",
        FABRIC_CREDENTIAL_RATE_PER_SECOND: "1000",
        FABRIC_CREDENTIAL_BURST: "1000",
      },
    },
  });
  pool = createPool({ url: fabric.databaseUrl, schema: "enrollment" });
  anonymous = enrollmentAs();
  admin = enrollmentAs(fabric.admin);
  const registry = fabric.client(RegistryService, "registry");
  await registry.createCluster({ clusterId: "c1", name: "Cluster one" });
  await registry.createCluster({ clusterId: "c2", name: "Cluster two" });
}, 180_000);

afterAll(async () => {
  await pool?.end();
  await fabric?.close();
  rmSync(work, { recursive: true, force: true });
});

function enrollmentAs(creds?: TlsCredentials): Client<typeof EnrollmentService> {
  return createRpcClient(EnrollmentService, {
    url: fabric.urls.enrollment!.grpc,
    credentials: creds ?? { caBundlePem: fabric.admin.caBundlePem },
    expectServerId: buildSpiffeId({ trustDomain: fabric.trustDomain, kind: "service", id: "enrollment" }),
    retries: 0,
    timeoutMs: 30_000,
  });
}

const facts = { hostname: "edge-1", os: "linux", arch: "x64", agentVersion: "1.0.0" };

async function newToken(
  init: { clusterId?: string; maxUses?: number; ttlMs?: number; roles?: string[] } = {},
) {
  return admin.createJoinToken({
    clusterId: init.clusterId ?? "c1",
    allowedRoles: init.roles ?? ["relay-node"],
    maxUses: init.maxUses ?? 1,
    ...(init.ttlMs ? { ttl: durationFromMs(init.ttlMs) } : {}),
  });
}

async function joinNode(token: string) {
  const key = await nodeKey();
  const res = await anonymous.join({
    token,
    csrPem: key.csrPem,
    facts,
    capabilities: ["can_route_mesh"],
    requestedRoles: ["relay-node"],
  });
  return { ...key, id: res.joinRequestId, challenge: res.challenge };
}

async function waitFor(node: { privateKeyPem: string; id: string; challenge: Uint8Array }) {
  const seen: WaitForApprovalResponse[] = [];
  for await (const res of anonymous.waitForApproval({
    joinRequestId: node.id,
    signature: signWaitForApproval(node.privateKeyPem, node.id, node.challenge),
  })) {
    seen.push(res);
  }
  return seen;
}

const requestCount = async () =>
  (await pool.query("SELECT count(*)::int AS n FROM join_requests")).rows[0].n as number;

/** `openssl verify` of a leaf against the root bundle through the chain; returns its output. */
function opensslVerify(
  certificatePem: string,
  chainPem: string[],
  caBundlePem: string,
  name: string,
): string {
  const dir = mkdtempSync(join(work, `${name}-`));
  writeFileSync(join(dir, "ca.pem"), caBundlePem);
  writeFileSync(join(dir, "chain.pem"), chainPem.join(""));
  writeFileSync(join(dir, "cert.pem"), certificatePem);
  return execFileSync(
    "openssl",
    ["verify", "-CAfile", join(dir, "ca.pem"), "-untrusted", join(dir, "chain.pem"), join(dir, "cert.pem")],
    { encoding: "utf8" },
  );
}

describe("node enrollment", () => {
  it("token → join → approve → a certificate that passes openssl verify, and a registered node", async () => {
    const token = await newToken();
    const node = await joinNode(token.token);
    const waiting = waitFor(node);
    const approved = await admin.approveJoinRequest({ joinRequestId: node.id });
    const messages = await waiting;
    expect(messages.map((m) => m.state)).toEqual([JoinRequestState.PENDING, JoinRequestState.APPROVED]);
    const final = messages.at(-1)!;
    expect(final.nodeId).toBe(approved.joinRequest!.nodeId);
    expect(opensslVerify(final.certificatePem, final.chainPem, final.caBundlePem, "node")).toMatch(
      /cert\.pem: OK/,
    );
    const cert = inspectCertificate(final.certificatePem);
    expect(cert.identity).toEqual({
      trustDomain: "fabric.test",
      kind: "node",
      id: final.nodeId,
      cluster: "c1",
    });
    expect(cert.grant).toBe("relay-node");

    const registered = await fabric.client(RegistryService, "registry").getNode({ nodeId: final.nodeId });
    expect(registered.node!.id).toBe(final.nodeId);

    // The node's new identity works over mTLS: it can renew itself.
    const nodeCreds: TlsCredentials = {
      privateKeyPem: node.privateKeyPem,
      certificatePem: final.certificatePem,
      chainPem: final.chainPem,
      caBundlePem: final.caBundlePem,
    };
    const renewed = await enrollmentAs(nodeCreds).renew({ csrPem: (await nodeKey()).csrPem });
    expect(inspectCertificate(renewed.certificatePem).identity).toEqual(cert.identity);
  });

  it("100 concurrent joins on a max-uses-1 token give exactly one request", async () => {
    const token = await newToken({ maxUses: 1 });
    const keys = await Promise.all(Array.from({ length: 100 }, () => nodeKey()));
    const before = await requestCount();
    const codes = await Promise.all(
      keys.map((key) => codeOf(anonymous.join({ token: token.token, csrPem: key.csrPem, facts }))),
    );
    expect(codes.filter((c) => c === "ok")).toHaveLength(1);
    expect(codes.filter((c) => c === Code.FailedPrecondition)).toHaveLength(99);
    expect(await requestCount()).toBe(before + 1);
    const listed = await admin.listJoinTokens({ clusterId: "c1" });
    expect(listed.joinTokens.find((x) => x.id === token.joinToken!.id)!.uses).toBe(1);
  });

  it("refuses replayed, expired, revoked, unknown and foreign-cluster tokens, creating nothing", async () => {
    const key = await nodeKey();
    const used = await newToken();
    // Used by another host: the same host sending Join again would get its request back (join.test.ts).
    await anonymous.join({ token: used.token, csrPem: (await nodeKey()).csrPem, facts });
    const expired = await newToken({ ttlMs: 1_000 });
    const revoked = await newToken();
    await admin.revokeJoinToken({ tokenId: revoked.joinToken!.id });
    const foreign = await newToken({ clusterId: "c2" });
    await new Promise((r) => setTimeout(r, 1_100));

    const before = await requestCount();
    const cases: [string, { token: string; clusterId?: string }, Code][] = [
      ["replayed", { token: used.token }, Code.FailedPrecondition],
      ["expired", { token: expired.token }, Code.FailedPrecondition],
      ["revoked", { token: revoked.token }, Code.FailedPrecondition],
      [
        "wrong secret",
        { token: `${used.joinToken!.id}.${Buffer.alloc(32).toString("base64url")}` },
        Code.Unauthenticated,
      ],
      ["foreign cluster", { token: foreign.token, clusterId: "c1" }, Code.PermissionDenied],
    ];
    for (const [name, req, code] of cases) {
      const err = await refusal(anonymous.join({ ...req, csrPem: key.csrPem, facts }));
      expect(err.code, name).toBe(code);
    }
    expect(await requestCount()).toBe(before);
  });

  it("refuses roles beyond the token with InvalidArgument", async () => {
    const token = await newToken({ roles: ["entry-node"] });
    const key = await nodeKey();
    const err = await refusal(
      anonymous.join({ token: token.token, csrPem: key.csrPem, facts, requestedRoles: ["relay-node"] }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
  });

  it("refuses a WaitForApproval proof made with another key with Unauthenticated", async () => {
    const node = await joinNode((await newToken()).token);
    const stranger = await nodeKey();
    const err = await refusal(
      (async () => {
        for await (const _ of anonymous.waitForApproval({
          joinRequestId: node.id,
          signature: signWaitForApproval(stranger.privateKeyPem, node.id, node.challenge),
        }))
          break;
      })(),
    );
    expect(err.code).toBe(Code.Unauthenticated);
  });
});

describe("developer PIN bootstrap", () => {
  it("issues a PIN, bootstraps with MAC verification, refuses replay, and locks after five failures", async () => {
    const { pin } = await admin.issueDeveloperPin({ developerId: "01", defaultClusterId: "c1" });
    const key = await nodeKey();
    const res = await anonymous.bootstrapDeveloper({ developerId: "01", pin, csrPem: key.csrPem });
    expect(verifyDeveloperBundleMac(pin, "01", res.caBundlePem, res.caBundleMac)).toBe(true);
    expect(res.caBundlePem).toBe(fabric.admin.caBundlePem);
    expect(opensslVerify(res.certificatePem, res.chainPem, res.caBundlePem, "dev")).toMatch(/OK/);
    expect(inspectCertificate(res.certificatePem).identity).toMatchObject({ kind: "user", id: "01" });
    expect(res.settings).toMatchObject({
      caEndpoint: fabric.urls.ca!.grpc,
      enrollmentEndpoint: fabric.urls.enrollment!.grpc,
      registryEndpoint: fabric.urls.registry!.grpc,
      trustDomain: "fabric.test",
      defaultClusterId: "c1",
    });
    const replay = await refusal(
      anonymous.bootstrapDeveloper({ developerId: "01", pin, csrPem: key.csrPem }),
    );
    expect(replay.code).toBe(Code.FailedPrecondition);

    const second = await admin.issueDeveloperPin({ developerId: "02" });
    const wrong = second.pin === "123456" ? "654321" : "123456";
    for (let i = 0; i < 5; i++) {
      expect(
        await codeOf(anonymous.bootstrapDeveloper({ developerId: "02", pin: wrong, csrPem: key.csrPem })),
      ).toBe(Code.Unauthenticated);
    }
    expect(
      await codeOf(anonymous.bootstrapDeveloper({ developerId: "02", pin: second.pin, csrPem: key.csrPem })),
    ).toBe(Code.ResourceExhausted);
  });
});

describe("renewal", () => {
  it("renews a valid identity, refuses it within a second of revocation and after expiry", async () => {
    const node = await fabric.issue({ kind: "node", id: "renew-me", cluster: "c1" });
    const asNode = enrollmentAs(node);
    const renewed = await asNode.renew({ csrPem: (await nodeKey()).csrPem });
    expect(inspectCertificate(renewed.certificatePem).identity!.id).toBe("renew-me");

    // Revocation at the CA reaches enrollment through WatchRevocations.
    const serial = inspectCertificate(node.certificatePem).serialHex;
    const revokedAt = Date.now();
    await fabric.client(CaService, "ca").revoke({ target: { case: "serial", value: serial } });
    let code: Code | "ok" = "ok";
    while (code === "ok" && Date.now() - revokedAt < 5_000) {
      code = await codeOf(asNode.renew({ csrPem: (await nodeKey()).csrPem }));
    }
    expect(Date.now() - revokedAt).toBeLessThan(1_000);
    expect(code).toBe(Code.Unauthenticated);

    // A renewed certificate with a 3-second lifetime: once expired, it cannot renew.
    const key = await nodeKey();
    const fresh = await fabric.issue({ kind: "node", id: "short-lived", cluster: "c1" });
    const short = await enrollmentAs(fresh).renew({
      csrPem: key.csrPem,
      requestedLifetime: durationFromMs(3_000),
    });
    const notAfter = timestampDate(short.notAfter!);
    expect(notAfter.getTime() - Date.now()).toBeLessThanOrEqual(3_000);
    const shortCreds: TlsCredentials = {
      privateKeyPem: key.privateKeyPem,
      certificatePem: short.certificatePem,
      chainPem: short.chainPem,
      caBundlePem: short.caBundlePem,
    };
    await new Promise((r) => setTimeout(r, Math.max(0, notAfter.getTime() - Date.now()) + 1_100));
    const expired = await refusal(enrollmentAs(shortCreds).renew({ csrPem: (await nodeKey()).csrPem }));
    expect(expired.code).toBe(Code.Unauthenticated);
  });
});

describe("a key revoked for key compromise", () => {
  it("is refused by Join's approval, BootstrapDeveloper and Renew, the credentials they spend kept", async () => {
    const node = await joinNode((await newToken()).token);
    await admin.approveJoinRequest({ joinRequestId: node.id });
    const issued = (await waitFor(node)).at(-1)!;
    await fabric.client(CaService, "ca").revoke({
      target: { case: "serial", value: inspectCertificate(issued.certificatePem).serialHex },
      reason: RevocationReason.KEY_COMPROMISE,
    });
    const leaked = { csrPem: node.csrPem };

    // Join: the request goes back to PENDING for the admin, with the CA's reason.
    const again = await anonymous.join({ token: (await newToken()).token, csrPem: leaked.csrPem, facts });
    const approval = await refusal(admin.approveJoinRequest({ joinRequestId: again.joinRequestId }));
    expect([approval.code, approval.rawMessage]).toEqual([
      Code.FailedPrecondition,
      expect.stringMatching(/key compromise.*pending again/),
    ]);

    // BootstrapDeveloper: refused, and the PIN still works with a new key.
    const { pin } = await admin.issueDeveloperPin({ developerId: "dev-leaked-key" });
    const boot = await refusal(
      anonymous.bootstrapDeveloper({ developerId: "dev-leaked-key", pin, csrPem: leaked.csrPem }),
    );
    expect([boot.code, boot.rawMessage]).toEqual([
      Code.FailedPrecondition,
      expect.stringMatching(/key compromise/),
    ]);
    await anonymous.bootstrapDeveloper({
      developerId: "dev-leaked-key",
      pin,
      csrPem: (await nodeKey()).csrPem,
    });

    // Renew: an identity cannot rekey onto the compromised key.
    const holder = enrollmentAs(await fabric.issue({ kind: "node", id: "rekeying", cluster: "c1" }));
    const renewal = await refusal(holder.renew({ csrPem: leaked.csrPem }));
    expect([renewal.code, renewal.rawMessage]).toEqual([
      Code.FailedPrecondition,
      expect.stringMatching(/key compromise/),
    ]);
  });
});

describe("approval converges to one identity", () => {
  it("approving twice concurrently yields one node and one certificate", async () => {
    const node = await joinNode((await newToken()).token);
    const [a, b] = await Promise.all([
      admin.approveJoinRequest({ joinRequestId: node.id }),
      admin.approveJoinRequest({ joinRequestId: node.id }),
    ]);
    expect(a.joinRequest!.nodeId).toBe(b.joinRequest!.nodeId);
    expect(a.joinRequest!.certificateSerial).toBe(b.joinRequest!.certificateSerial);
    const certs = await fabric.client(CaService, "ca").listCertificates({
      principalId: a.joinRequest!.nodeId,
      principalKind: PrincipalKind.NODE,
    });
    expect(certs.certificates).toHaveLength(1);
  });

  it("enrollment killed (SIGKILL) between signing and registering completes after restart with one identity", async () => {
    const node = await joinNode((await newToken()).token);
    await fabric.stop("registry");
    const approving = codeOf(admin.approveJoinRequest({ joinRequestId: node.id }));
    // Wait until the certificate is signed and stored, the registry not yet told: then kill enrollment.
    await expect
      .poll(
        async () =>
          (await pool.query("SELECT certificate_serial FROM join_requests WHERE id = $1", [node.id])).rows[0]
            ?.certificate_serial as string | null,
        { timeout: 20_000, interval: 50 },
      )
      .toMatch(/^[0-9a-f]+$/);
    await fabric.kill("enrollment");
    expect([Code.Unavailable, Code.Internal, Code.Canceled, Code.Unknown]).toContain(await approving);
    await fabric.start("registry");
    await fabric.start("enrollment");

    const messages = await waitFor(node);
    const final = messages.at(-1)!;
    expect(final.state).toBe(JoinRequestState.APPROVED);
    const nodes = await fabric.client(RegistryService, "registry").listNodes({ clusterId: "c1" });
    expect(nodes.nodes.filter((n) => n.id === final.nodeId)).toHaveLength(1);
    const certs = await fabric.client(CaService, "ca").listCertificates({
      principalId: final.nodeId,
      principalKind: PrincipalKind.NODE,
    });
    expect(certs.certificates.map((c) => c.serial)).toEqual([
      inspectCertificate(final.certificatePem).serialHex,
    ]);
    // Approving again afterwards changes nothing.
    const again = await admin.approveJoinRequest({ joinRequestId: node.id });
    expect(again.joinRequest!.nodeId).toBe(final.nodeId);
  });
});
