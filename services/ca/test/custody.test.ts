import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import {
  SERVICE_NAMES,
  buildCsr,
  createRpcClient,
  generateP256KeyPair,
  inspectCertificate,
  loadIdentity,
  saveIdentity,
  verifyChain,
  x509,
} from "@fabric/platform";
import { createTestDatabase, freePort, spawnTs, type TestDatabase } from "@fabric/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CA_FILES,
  OfflineIssuer,
  caStatus,
  initCa,
  issueIdentity,
  serviceIdentityDir,
  type InitCaResult,
} from "../src/index.js";
import { WrongPassphraseError, openPrivateKey } from "../src/key-custody.js";

const MAIN = fileURLToPath(new URL("../src/main.ts", import.meta.url));
const PASSPHRASE = "correct horse battery staple";
const DAY = 86_400_000;

let root: string;
let dir: string;
let init: InitCaResult;
let db: TestDatabase;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "fabric-ca-custody-"));
  dir = join(root, "ca");
  init = await initCa({ dir, trustDomain: "custody.test", passphrase: PASSPHRASE });
  db = await createTestDatabase("cacustody");
});

afterAll(async () => {
  await db?.drop();
  rmSync(root, { recursive: true, force: true });
});

async function caEnv(extra: Record<string, string> = {}) {
  const grpc = await freePort();
  const http = await freePort();
  return {
    env: {
      DATABASE_URL: db.url,
      FABRIC_TRUST_DOMAIN: "custody.test",
      FABRIC_CA_DIR: dir,
      FABRIC_CA_PASSPHRASE: PASSPHRASE,
      FABRIC_IDENTITY_DIR: serviceIdentityDir(dir, "ca"),
      FABRIC_GRPC_PORT: String(grpc),
      FABRIC_HTTP_PORT: String(http),
      FABRIC_LOG_LEVEL: "warn",
      ...extra,
    },
    grpcUrl: `https://127.0.0.1:${grpc}`,
    readyUrl: `http://127.0.0.1:${http}/readyz`,
  };
}

describe("initCa", () => {
  it("creates a P-256 root (10 years) and intermediate (1 year, path length 0) and reports their fingerprints", () => {
    const rootCert = new x509.X509Certificate(readFileSync(join(dir, CA_FILES.rootCertificate), "utf8"));
    const intermediate = new x509.X509Certificate(
      readFileSync(join(dir, CA_FILES.intermediateCertificate), "utf8"),
    );
    expect(init.root.fingerprintSha256).toBe(inspectCertificate(rootCert.toString("pem")).fingerprintSha256);
    expect(init.intermediate.fingerprintSha256).toMatch(/^[0-9a-f]{64}$/);
    for (const cert of [rootCert, intermediate]) {
      expect(cert.publicKey.algorithm).toMatchObject({ name: "ECDSA", namedCurve: "P-256" });
    }
    const years = (c: x509.X509Certificate) => (c.notAfter.getTime() - c.notBefore.getTime()) / (365 * DAY);
    expect(years(rootCert)).toBeGreaterThan(9.9);
    expect(years(intermediate)).toBeGreaterThan(0.99);
    expect(years(intermediate)).toBeLessThan(1.01);
    expect(intermediate.getExtension(x509.BasicConstraintsExtension)).toMatchObject({
      ca: true,
      pathLength: 0,
    });
    expect(intermediate.issuer).toBe(rootCert.subject);
  });

  it("keeps both private keys only encrypted, readable with the passphrase and not without", async () => {
    for (const [file, purpose] of [
      [CA_FILES.rootKey, "root"],
      [CA_FILES.intermediateKey, "intermediate"],
    ] as const) {
      const path = join(dir, file);
      const text = readFileSync(path, "utf8");
      expect(text).not.toMatch(/PRIVATE KEY/);
      expect(JSON.parse(text)).toMatchObject({ cipher: "aes-256-gcm", kdf: { name: "scrypt" } });
      expect(statSync(path).mode & 0o777).toBe(0o600);
      expect(await openPrivateKey(path, PASSPHRASE, purpose)).toMatch(/BEGIN PRIVATE KEY/);
      await expect(openPrivateKey(path, "not the passphrase", purpose)).rejects.toBeInstanceOf(
        WrongPassphraseError,
      );
    }
    // the purpose is bound into the ciphertext: the intermediate file cannot pass as the root key
    await expect(openPrivateKey(join(dir, CA_FILES.intermediateKey), PASSPHRASE, "root")).rejects.toThrow(
      /holds the intermediate key/,
    );
  });

  it("refuses a short passphrase and an existing CA", async () => {
    await expect(
      initCa({ dir: join(root, "short"), trustDomain: "x.test", passphrase: "short" }),
    ).rejects.toThrow(/at least 12/);
    await expect(initCa({ dir, trustDomain: "custody.test", passphrase: PASSPHRASE })).rejects.toThrow(
      /already holds a CA/,
    );
  });

  it("writes the four service identities (kind service, localhost, 127.0.0.1 and the name)", () => {
    for (const name of SERVICE_NAMES) {
      const id = loadIdentity(serviceIdentityDir(dir, name));
      const facts = inspectCertificate(id.certificatePem);
      expect(facts.spiffeId).toBe(`spiffe://custody.test/service/${name}`);
      expect(facts.kindExtension).toBe("service");
      expect(facts.grant).toBe(name);
      const life = facts.notAfter.getTime() - facts.notBefore.getTime();
      expect(life).toBeGreaterThan(24 * 3_600_000);
      expect(life).toBeLessThanOrEqual(24 * 3_600_000 + 61_000);
      const san = new x509.X509Certificate(id.certificatePem).getExtension(
        x509.SubjectAlternativeNameExtension,
      )!;
      expect(san.names.items.map((n) => n.value)).toEqual([
        `spiffe://custody.test/service/${name}`,
        "localhost",
        name,
        "127.0.0.1",
      ]);
      expect(verifyChain(id.certificatePem, id.chainPem, id.caBundlePem)).toBe(true);
      expect(statSync(join(serviceIdentityDir(dir, name), "key.pem")).mode & 0o777).toBe(0o600);
    }
  });

  it("issues identities offline with the policy's lifetimes (the CLI's `fabric up` admin)", async () => {
    const admin = await issueIdentity({
      caDir: dir,
      passphrase: PASSPHRASE,
      claims: { kind: "admin", id: "root", grant: "platform-admin" },
    });
    const facts = inspectCertificate(admin.certificatePem);
    expect(facts.grant).toBe("platform-admin");
    expect(Math.round((facts.notAfter.getTime() - facts.notBefore.getTime()) / DAY)).toBe(30);
    const capped = (await OfflineIssuer.open({ caDir: dir, passphrase: PASSPHRASE })).issue(
      { kind: "user", id: "dev01", grant: "developer" },
      { lifetimeMs: 400 * DAY },
    );
    const cappedFacts = inspectCertificate(capped.certificatePem);
    expect(Math.round((cappedFacts.notAfter.getTime() - cappedFacts.notBefore.getTime()) / DAY)).toBe(90);
    await expect(
      issueIdentity({ caDir: dir, passphrase: "wrong wrong wrong", claims: { kind: "user", id: "u" } }),
    ).rejects.toBeInstanceOf(WrongPassphraseError);
  });
});

describe("the CA process and its keys", () => {
  it("stops with a clear message when the passphrase is wrong", { timeout: 90_000 }, async () => {
    const { env } = await caEnv({ FABRIC_CA_PASSPHRASE: "this is not it at all" });
    const child = await spawnTs(MAIN, { env });
    expect(await child.exited).toBe(78);
    expect(child.output()).toContain(
      `FABRIC_CA_PASSPHRASE: the CA passphrase does not decrypt ${join(dir, CA_FILES.intermediateKey)}`,
    );
    expect(child.output()).not.toContain("this is not it at all");
  });

  it(
    "reads the passphrase from FABRIC_CA_PASSPHRASE_FILE and runs with the root key moved away",
    { timeout: 90_000 },
    async () => {
      const passphraseFile = join(root, "passphrase");
      writeFileSync(passphraseFile, `${PASSPHRASE}\n`, { mode: 0o600 });
      const offline = join(root, "root.key.enc.offline");
      renameSync(join(dir, CA_FILES.rootKey), offline);
      const { env, grpcUrl, readyUrl } = await caEnv({
        FABRIC_CA_PASSPHRASE: "",
        FABRIC_CA_PASSPHRASE_FILE: passphraseFile,
      });
      const child = await spawnTs(MAIN, { env, readyUrl });
      try {
        const admin = await issueIdentity({
          caDir: dir,
          passphrase: PASSPHRASE,
          claims: { kind: "admin", id: "ops", grant: "platform-admin" },
        });
        const ca = createRpcClient(CaService, {
          url: grpcUrl,
          credentials: admin,
          expectServerId: "spiffe://custody.test/service/ca",
        });
        const bundle = await ca.getTrustBundle({});
        expect(bundle.rootFingerprintsSha256).toEqual([init.root.fingerprintSha256]);
        const asEnrollment = createRpcClient(CaService, {
          url: grpcUrl,
          credentials: loadIdentity(serviceIdentityDir(dir, "enrollment")),
          expectServerId: "spiffe://custody.test/service/ca",
        });
        const request = {
          csrPem: await buildCsr(generateP256KeyPair().privateKeyPem, "u1"),
          principalKind: PrincipalKind.USER,
          principalId: "u1",
          grants: ["developer"],
          authorizationRef: "developer-pin/u1",
        };
        const signed = await asEnrollment.sign(request);
        expect(inspectCertificate(signed.certificatePem).spiffeId).toBe("spiffe://custody.test/user/u1");
        const bad = await asEnrollment
          .sign({ ...request, csrPem: "nope" })
          .catch((err: unknown) => ConnectError.from(err));
        expect(bad).toMatchObject({ code: Code.InvalidArgument });
        const status = await caStatus({ caDir: dir, databaseUrl: db.url });
        expect(status.root.keyPresent).toBe(false);
        expect(status.root.fingerprintSha256).toBe(init.root.fingerprintSha256);
        expect(status.intermediate.fingerprintSha256).toBe(init.intermediate.fingerprintSha256);
        expect(status.intermediate.notAfter).toEqual(init.intermediate.notAfter);
        // initCa's four service identities and the offline admins, imported from the journal
        expect(status.counts).toMatchObject({ revoked: 0 });
        expect(status.counts!.issued).toBeGreaterThanOrEqual(6); // 4 services, the admins, u1
      } finally {
        await child.stop();
        renameSync(offline, join(dir, CA_FILES.rootKey));
      }
    },
  );

  it(
    "renews its own identity locally before it expires, recorded in its inventory",
    { timeout: 90_000 },
    async () => {
      // Give the CA a 9-second identity so it renews at two thirds (~6 s) during the test.
      const issuer = await OfflineIssuer.open({ caDir: dir, passphrase: PASSPHRASE });
      const now = Date.now();
      const caDir = serviceIdentityDir(dir, "ca");
      saveIdentity(
        caDir,
        issuer.issue(
          { kind: "service", id: "ca", grant: "ca" },
          {
            notBefore: new Date(now),
            notAfter: new Date(now + 9_000),
            dnsNames: ["localhost", "ca"],
            ipAddresses: ["127.0.0.1"],
          },
        ),
      );
      const before = inspectCertificate(loadIdentity(caDir).certificatePem).serialHex;
      const { env, grpcUrl, readyUrl } = await caEnv({ FABRIC_SERVICE_LIFETIME_MS: "60000" });
      const child = await spawnTs(MAIN, { env, readyUrl });
      try {
        let renewed = before;
        for (let i = 0; i < 100 && renewed === before; i++) {
          await new Promise((r) => setTimeout(r, 200));
          if (existsSync(join(caDir, "cert.pem")))
            renewed = inspectCertificate(loadIdentity(caDir).certificatePem).serialHex;
        }
        expect(renewed).not.toBe(before);
        const current = loadIdentity(caDir);
        const facts = inspectCertificate(current.certificatePem);
        expect(facts.spiffeId).toBe("spiffe://custody.test/service/ca");
        expect(facts.notAfter.getTime() - facts.notBefore.getTime()).toBe(120_000);
        // the renewed identity is served: a client checking the CA's SPIFFE ID still connects
        const admin = issuer.issue({ kind: "admin", id: "ops2", grant: "platform-admin" });
        const ca = createRpcClient(CaService, {
          url: grpcUrl,
          credentials: admin,
          expectServerId: "spiffe://custody.test/service/ca",
        });
        const listed = await ca.listCertificates({ principalId: "ca" });
        const entry = listed.certificates.find((c) => c.serial === facts.serialHex);
        expect(entry?.authorizationRef).toBe(`renewal/${before}`);
        const text = execFileSync("openssl", ["x509", "-noout", "-text"], {
          input: current.certificatePem,
          encoding: "utf8",
        });
        expect(text).toContain("TLS Web Server Authentication");
      } finally {
        await child.stop();
      }
    },
  );
});
