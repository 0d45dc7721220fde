import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createPublicKey } from "node:crypto";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { CaService, SignRequestSchema, type SignRequest } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import {
  ECDSA_SHA256,
  buildCsr,
  createPool,
  generateP256KeyPair,
  inspectCertificate,
  listAudit,
  toCryptoKeyPair,
  verifyAuditChain,
  verifyChain,
  x509,
  type Pool,
  type TlsCredentials,
} from "@fabric/platform";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFabric, type Fabric } from "../../../test/harness/fabric.js";

const DAY = 86_400_000;
let fabric: Fabric;
let pool: Pool;
const ids: Record<string, TlsCredentials> = {};

beforeAll(async () => {
  // Two issuance workers whatever the machine, so the worker-thread path is what these tests exercise.
  fabric = await startFabric({ services: ["ca"], env: { ca: { FABRIC_ISSUANCE_WORKERS: "2" } } });
  pool = createPool({ url: fabric.databaseUrl, schema: "ca" });
  ids.enrollment = fabric.serviceIdentity("enrollment");
  ids.registry = fabric.serviceIdentity("registry");
  ids.router = fabric.serviceIdentity("router");
  ids.ca = fabric.serviceIdentity("ca");
  ids.node = await fabric.issue({ kind: "node", id: "n-1", cluster: "c1" });
  ids.user = await fabric.issue({ kind: "user", id: "dev01", grant: "developer" });
  ids.platformAdmin = fabric.admin;
  ids.clusterAdmin = await fabric.issue({
    kind: "admin",
    id: "carol",
    cluster: "c1",
    grant: "cluster-admin",
  });
  ids.orgAdmin = await fabric.issue({ kind: "admin", id: "olga", organization: "o1", grant: "org-admin" });
});

afterAll(async () => {
  await pool?.end();
  await fabric?.close();
});

const ca = (who: string) => fabric.client(CaService, "ca", ids[who]!);

async function refusal(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call succeeded but should have been refused");
}

async function nodeRequest(init: MessageInitShape<typeof SignRequestSchema> = {}) {
  const key = generateP256KeyPair();
  return {
    key,
    request: create(SignRequestSchema, {
      csrPem: await buildCsr(key.privateKeyPem, "ignored"),
      principalKind: PrincipalKind.NODE,
      principalId: "n-2",
      clusterId: "c1",
      organizationId: "o1",
      grants: ["entry-node", "relay-node"],
      authorizationRef: "join-request/jr-1",
      ...init,
    }),
  };
}

describe("Sign", () => {
  it("issues for enrollment: names from the request, key from the CSR, chain to the root", async () => {
    const { key, request } = await nodeRequest();
    const res = await ca("enrollment").sign(request);
    const facts = inspectCertificate(res.certificatePem);
    expect(facts.spiffeId).toBe("spiffe://fabric.test/cluster/c1/node/n-2");
    expect(res.spiffeId).toBe(facts.spiffeId);
    expect(facts.subjectCommonName).toBe("n-2");
    expect(facts.clusterExtension).toBe("c1");
    expect(facts.organization).toBe("o1");
    expect(facts.grant).toBe("entry-node,relay-node");
    expect(res.serial).toBe(facts.serialHex);
    expect(res.serial).toMatch(/^[1-9a-f][0-9a-f]{31}$/);
    expect(res.fingerprintSha256).toBe(facts.fingerprintSha256);
    expect(verifyChain(res.certificatePem, res.chainPem, res.caBundlePem)).toBe(true);
    // openssl agrees: root → intermediate → leaf, and it sees the SPIFFE URI and the Fabric extensions
    const dir = mkdtempSync(join(tmpdir(), "fabric-ca-sign-"));
    try {
      writeFileSync(join(dir, "root.pem"), res.caBundlePem);
      writeFileSync(join(dir, "chain.pem"), res.chainPem.join(""));
      writeFileSync(join(dir, "leaf.pem"), res.certificatePem);
      const verified = execFileSync(
        "openssl",
        [
          "verify",
          "-CAfile",
          join(dir, "root.pem"),
          "-untrusted",
          join(dir, "chain.pem"),
          join(dir, "leaf.pem"),
        ],
        { encoding: "utf8" },
      );
      expect(verified.trim()).toBe(`${join(dir, "leaf.pem")}: OK`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const text = execFileSync("openssl", ["x509", "-noout", "-text"], {
      input: res.certificatePem,
      encoding: "utf8",
    });
    expect(text).toContain("URI:spiffe://fabric.test/cluster/c1/node/n-2");
    expect(text).toMatch(/1\.3\.6\.1\.4\.1\.99999\.1\.1:\s*\n\s*\.\.node/);
    const cert = new x509.X509Certificate(res.certificatePem);
    const spki = createPublicKey(key.publicKeyPem).export({ type: "spki", format: "der" });
    expect(Buffer.from(cert.publicKey.rawData)).toEqual(spki);
    // default node lifetime: 30 days, backdated one minute
    const notBefore = timestampDate(res.notBefore!).getTime();
    expect(Date.now() - notBefore).toBeGreaterThanOrEqual(59_000);
    expect(Date.now() - notBefore).toBeLessThan(70_000);
    expect(Math.round((timestampDate(res.notAfter!).getTime() - Date.now()) / DAY)).toBe(30);
  });

  it("ignores names and extensions the CSR asks for: no CA:true, no foreign SAN", async () => {
    const key = generateP256KeyPair();
    const keys = await toCryptoKeyPair(key.privateKeyPem);
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "CN=root-of-everything",
      keys,
      signingAlgorithm: ECDSA_SHA256,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
        new x509.SubjectAlternativeNameExtension([
          { type: "dns", value: "evil.example" },
          { type: "url", value: "spiffe://other.domain/service/ca" },
        ]),
      ],
    });
    const { request } = await nodeRequest({ csrPem: csr.toString("pem") });
    const res = await ca("enrollment").sign(request);
    const cert = new x509.X509Certificate(res.certificatePem);
    expect(cert.subject).toBe("CN=n-2");
    expect(cert.getExtension(x509.BasicConstraintsExtension)!.ca).toBe(false);
    expect(cert.getExtension(x509.KeyUsagesExtension)!.usages).toBe(x509.KeyUsageFlags.digitalSignature);
    const sans = cert.getExtension(x509.SubjectAlternativeNameExtension)!.names.items.map((n) => n.value);
    expect(sans).toEqual(["spiffe://fabric.test/cluster/c1/node/n-2"]);
    const text = execFileSync("openssl", ["x509", "-noout", "-text"], {
      input: res.certificatePem,
      encoding: "utf8",
    });
    expect(text).toContain("CA:FALSE");
    expect(text).not.toContain("evil.example");
    expect(text).not.toContain("other.domain");
  });

  it("clamps the validity to the kind's cap instead of refusing", async () => {
    const { request } = await nodeRequest({ requestedLifetime: durationFromMs(365 * DAY) });
    const res = await ca("enrollment").sign(request);
    expect(Math.round((timestampDate(res.notAfter!).getTime() - Date.now()) / DAY)).toBe(90);
    const shorter = await ca("enrollment").sign(
      (await nodeRequest({ requestedLifetime: durationFromMs(2 * DAY) })).request,
    );
    expect(Math.round((timestampDate(shorter.notAfter!).getTime() - Date.now()) / DAY)).toBe(2);
  });

  it("lets a service renew only its own identity: 24 hours, serverAuth, its names", async () => {
    const key = generateP256KeyPair();
    const request = create(SignRequestSchema, {
      csrPem: await buildCsr(key.privateKeyPem, "registry"),
      principalKind: PrincipalKind.SERVICE,
      principalId: "registry",
      grants: ["registry"],
      dnsNames: ["localhost", "registry"],
      ipAddresses: ["127.0.0.1"],
      requestedLifetime: durationFromMs(7 * DAY),
      authorizationRef: "renewal/abc",
    });
    const res = await ca("registry").sign(request);
    const facts = inspectCertificate(res.certificatePem);
    expect(facts.spiffeId).toBe("spiffe://fabric.test/service/registry");
    expect(timestampDate(res.notAfter!).getTime() - timestampDate(res.notBefore!).getTime()).toBe(
      DAY + 60_000,
    );
    const text = execFileSync("openssl", ["x509", "-noout", "-text"], {
      input: res.certificatePem,
      encoding: "utf8",
    });
    expect(text).toContain("TLS Web Server Authentication");
    expect(text).toContain("DNS:registry");

    // ...but not anyone else's, nor may enrollment mint a control-plane service identity
    for (const [who, principalId] of [
      ["registry", "router"],
      ["router", "registry"],
      ["enrollment", "ca"],
    ] as const) {
      const err = await refusal(ca(who).sign({ ...request, principalId, grants: [principalId] }));
      expect(err.code, `${who} → ${principalId}`).toBe(Code.PermissionDenied);
    }
    const asNode = await refusal(ca("registry").sign((await nodeRequest()).request));
    expect(asNode.code).toBe(Code.PermissionDenied);
    expect(asNode.rawMessage).toMatch(/may only renew its own identity/);
  });

  it("is refused to nodes, users, admins and the CA's own identity", async () => {
    const { request } = await nodeRequest();
    for (const who of ["node", "user", "platformAdmin", "clusterAdmin", "orgAdmin", "ca"]) {
      const err = await refusal(ca(who).sign(request));
      expect(err.code, who).toBe(Code.PermissionDenied);
      expect(err.rawMessage).toContain("fabric.ca.v1.CaService/Sign");
    }
  });

  it("refuses bad CSRs and bad requests with InvalidArgument, issuing nothing", async () => {
    const before = (await pool.query<{ n: string }>("SELECT count(*)::text AS n FROM certificates")).rows[0]!
      .n;
    const { request } = await nodeRequest();
    const der = Buffer.from(x509.PemConverter.decodeFirst(request.csrPem));
    der[der.length - 3] = der[der.length - 3]! ^ 0x55;
    const cases: [Partial<SignRequest>, RegExp][] = [
      [{ csrPem: x509.PemConverter.encode(der, "CERTIFICATE REQUEST") }, /signature does not verify/],
      [
        {
          csrPem: execFileSync(
            "openssl",
            ["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=x", "-keyout", "/dev/null"],
            { encoding: "utf8", stdio: ["pipe", "pipe", "ignore"] },
          ),
        },
        /key is RSA 2048; Fabric accepts only ECDSA P-256/,
      ],
      [
        {
          csrPem: execFileSync(
            "openssl",
            [
              "req",
              "-new",
              "-newkey",
              "ec",
              "-pkeyopt",
              "ec_paramgen_curve:P-384",
              "-nodes",
              "-subj",
              "/CN=x",
              "-keyout",
              "/dev/null",
            ],
            { encoding: "utf8", stdio: ["pipe", "pipe", "ignore"] },
          ),
        },
        /key is EC P-384; Fabric accepts only ECDSA P-256/,
      ],
      [{ principalKind: PrincipalKind.UNSPECIFIED }, /principal_kind is required/],
      [{ principalId: "bad id!" }, /principal_id/],
      [{ clusterId: "" }, /cluster_id is required for a node/],
      [{ authorizationRef: "" }, /authorization_ref is required/],
      [{ dnsNames: ["n-2.example"] }, /only for PRINCIPAL_KIND_SERVICE/],
      [{ grants: ["a,b"] }, /each grant/],
      [{ principalKind: PrincipalKind.ADMIN, clusterId: "", grants: ["root"] }, /exactly one admin role/],
      [{ principalKind: PrincipalKind.ADMIN, clusterId: "", grants: ["cluster-admin"] }, /needs cluster_id/],
    ];
    for (const [change, message] of cases) {
      const err = await refusal(ca("enrollment").sign({ ...request, ...change }));
      expect(err.code, String(message)).toBe(Code.InvalidArgument);
      expect(err.rawMessage).toMatch(message);
    }
    const after = (await pool.query<{ n: string }>("SELECT count(*)::text AS n FROM certificates")).rows[0]!
      .n;
    expect(after).toBe(before);
  });

  it("records every issuance in ListCertificates with an audit event, on an intact audit chain", async () => {
    const serials: string[] = [];
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const { request } = await nodeRequest({
          principalId: `bulk-${i}`,
          authorizationRef: `join-request/bulk-${i}`,
        });
        serials.push((await ca("enrollment").sign(request)).serial);
      }),
    );
    const latest = (await ca("enrollment").sign((await nodeRequest({ principalId: "latest" })).request))
      .serial;
    const listed = [];
    let pageToken = "";
    do {
      const page = await ca("platformAdmin").listCertificates({ clusterId: "c1", pageSize: 7, pageToken });
      listed.push(...page.certificates);
      pageToken = page.nextPageToken;
    } while (pageToken);
    for (const serial of serials) {
      const info = listed.find((c) => c.serial === serial);
      expect(info?.authorizationRef).toMatch(/^join-request\/bulk-/);
      expect(info?.principalKind).toBe(PrincipalKind.NODE);
      expect(info?.grants).toEqual(["entry-node", "relay-node"]);
    }
    expect(listed[0]!.serial).toBe(latest); // newest first
    expect(new Set(listed.map((c) => c.serial)).size).toBe(listed.length); // pages neither repeat nor skip

    const audit = await listAudit(pool, { action: "certificate.issue" }, { limit: 10_000 });
    const audited = new Set(audit.map((e) => e.targetId));
    const { rows } = await pool.query<{ serial: string }>("SELECT serial FROM certificates");
    for (const r of rows) expect(audited.has(r.serial), r.serial).toBe(true);
    expect(audit.find((e) => e.targetId === serials[0])).toMatchObject({
      actorId: "enrollment",
      actorKind: "service",
      outcome: "success",
    });
    const chain = await verifyAuditChain(pool);
    expect(chain).toMatchObject({ ok: true });
    expect(chain.checked).toBeGreaterThanOrEqual(rows.length);
  });

  it("audits refused issuance attempts", async () => {
    await refusal(ca("router").sign({ ...(await nodeRequest()).request }));
    const refused = await listAudit(pool, { action: "certificate.issue", actorId: "router" }, { limit: 10 });
    expect(refused[0]).toMatchObject({ outcome: "refused" });
  });
});

describe("ListCertificates and GetTrustBundle", () => {
  it("shows a cluster-admin only its cluster", async () => {
    await fabric.issue({ kind: "node", id: "other", cluster: "c2" });
    const page = await ca("clusterAdmin").listCertificates({});
    expect(page.certificates.length).toBeGreaterThan(0);
    expect(page.certificates.every((c) => c.clusterId === "c1")).toBe(true);
    expect((await refusal(ca("clusterAdmin").listCertificates({ clusterId: "c2" }))).code).toBe(
      Code.PermissionDenied,
    );
    const all = await ca("platformAdmin").listCertificates({ clusterId: "c2" });
    expect(all.certificates.map((c) => c.principalId)).toEqual(["other"]);
  });

  it("is refused to everyone but platform- and cluster-admins and the enrollment and registry services", async () => {
    for (const who of ["node", "user", "orgAdmin", "router"]) {
      expect((await refusal(ca(who).listCertificates({}))).code, who).toBe(Code.PermissionDenied);
    }
    // Enrollment looks up a node's certificates to revoke any issued for a Sign whose answer was lost; the
    // registry reads the grants of the admin who approved attaching a host to an existing node.
    for (const service of ["enrollment", "registry"]) {
      const found = await ca(service).listCertificates({
        principalKind: PrincipalKind.NODE,
        principalId: "n-none",
      });
      expect(found.certificates, service).toEqual([]);
    }
  });

  it("refuses a page token used with other filters", async () => {
    const page = await ca("platformAdmin").listCertificates({ pageSize: 1 });
    const err = await refusal(
      ca("platformAdmin").listCertificates({ pageSize: 1, pageToken: page.nextPageToken, clusterId: "c1" }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
  });

  it("gives any authenticated principal the trust bundle", async () => {
    for (const who of [
      "node",
      "user",
      "orgAdmin",
      "clusterAdmin",
      "platformAdmin",
      "enrollment",
      "registry",
      "router",
    ]) {
      const bundle = await ca(who).getTrustBundle({});
      expect(bundle.trustDomain, who).toBe("fabric.test");
      expect(bundle.caBundlePem).toBe(fabric.admin.caBundlePem);
      expect(bundle.intermediatesPem).toEqual(fabric.admin.chainPem);
      expect(bundle.rootFingerprintsSha256[0]).toBe(inspectCertificate(bundle.caBundlePem).fingerprintSha256);
      expect(bundle.ocspUrls).toEqual([`${fabric.urls.ca!.http}/ocsp`]);
    }
  });
});
