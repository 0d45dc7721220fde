import { execFileSync } from "node:child_process";
import { generateKeyPairSync, webcrypto, type KeyObject } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { inspectCertificate, verifyChain } from "../src/pki/certificates.js";
import { CsrError, buildCsr, verifyCsr } from "../src/pki/csr.js";
import { generateP256KeyPair } from "../src/pki/keys.js";
import { OID_CLUSTER, OID_GRANT, OID_PRINCIPAL_KIND } from "../src/pki/oids.js";
import { buildSpiffeId, parseSpiffeId } from "../src/pki/spiffe.js";
import { principalFromCertificate } from "../src/principal.js";
import { certificateDer, createTestPki, type TestPki } from "../src/testing/pki.js";
import { x509 } from "../src/pki/x509.js";

describe("SPIFFE IDs", () => {
  it("round-trips every principal kind", () => {
    const node = { trustDomain: "acme.example", kind: "node" as const, id: "n-1", cluster: "eu" };
    expect(buildSpiffeId(node)).toBe("spiffe://acme.example/cluster/eu/node/n-1");
    expect(parseSpiffeId("spiffe://acme.example/cluster/eu/node/n-1")).toEqual(node);
    for (const kind of ["service", "user", "admin"] as const) {
      const id = buildSpiffeId({ trustDomain: "acme.example", kind, id: "x01" });
      expect(id).toBe(`spiffe://acme.example/${kind}/x01`);
      expect(parseSpiffeId(id)).toEqual({ trustDomain: "acme.example", kind, id: "x01" });
    }
  });

  it("refuses malformed or foreign shapes", () => {
    for (const bad of [
      "https://acme.example/user/x",
      "spiffe://ACME/user/x",
      "spiffe://acme.example/node/x", // nodes live under a cluster
      "spiffe://acme.example/robot/x",
      "spiffe://acme.example/user/../x",
      "spiffe://acme.example/user/x/y",
    ]) {
      expect(() => parseSpiffeId(bad), bad).toThrow();
    }
    expect(() => buildSpiffeId({ trustDomain: "acme.example", kind: "node", id: "n" })).toThrow(/cluster/);
  });
});

describe("CSRs", () => {
  it("verifies a P-256 CSR and reads its key", async () => {
    const key = generateP256KeyPair();
    const verified = await verifyCsr(await buildCsr(key.privateKeyPem, "n-1"));
    expect(verified.commonName).toBe("n-1");
    expect(verified.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
  });

  it("refuses RSA and P-384 keys naming what is accepted", async () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const rsaCsr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "CN=r",
      keys: await toWebKeys(rsa, { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }),
      signingAlgorithm: { name: "RSASSA-PKCS1-v1_5" },
    });
    await expect(verifyCsr(rsaCsr.toString("pem"))).rejects.toThrow(/RSA 2048; Fabric accepts only EC P-256/);

    const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" });
    const p384Csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "CN=p",
      keys: await toWebKeys(p384, { name: "ECDSA", namedCurve: "P-384" }),
      signingAlgorithm: { name: "ECDSA", hash: "SHA-384" },
    });
    await expect(verifyCsr(p384Csr.toString("pem"))).rejects.toThrow(/EC P-384/);
  });

  it("refuses a CSR whose signature does not match its key, and garbage", async () => {
    const pem = await buildCsr(generateP256KeyPair().privateKeyPem, "n-1");
    const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ""), "base64");
    der[der.length - 5]! ^= 0xff; // flip a bit inside the signature
    await expect(verifyCsr(der.toString("base64"))).rejects.toThrow(CsrError);
    await expect(verifyCsr("not a csr")).rejects.toThrow(/not a PEM or DER/);
  });
});

describe("identity certificates", () => {
  let pki: TestPki;
  beforeAll(async () => {
    pki = await createTestPki("acme.example");
  });

  it("carry the SPIFFE ID and custom extensions, chain to the root, and pass openssl verify", async () => {
    const creds = await pki.issue({
      kind: "node",
      id: "n-7",
      cluster: "eu",
      organization: "org-a",
      grant: "relay-node",
    });
    const facts = inspectCertificate(creds.certificatePem);
    expect(facts.spiffeId).toBe("spiffe://acme.example/cluster/eu/node/n-7");
    expect(facts.isCa).toBe(false);
    expect(facts.serialHex).toMatch(/^[0-9a-f]{32}$/);
    expect(verifyChain(creds.certificatePem, creds.chainPem, creds.caBundlePem)).toBe(true);

    const dir = mkdtempSync(join(tmpdir(), "fabric-pki-"));
    writeFileSync(join(dir, "root.pem"), pki.rootPem);
    writeFileSync(join(dir, "int.pem"), pki.intermediatePem);
    writeFileSync(join(dir, "leaf.pem"), creds.certificatePem);
    const out = execFileSync(
      "openssl",
      ["verify", "-CAfile", "root.pem", "-untrusted", "int.pem", "leaf.pem"],
      { cwd: dir },
    );
    expect(out.toString()).toContain("leaf.pem: OK");
    const text = execFileSync("openssl", ["x509", "-in", "leaf.pem", "-noout", "-text"], {
      cwd: dir,
    }).toString();
    expect(text).toContain("URI:spiffe://acme.example/cluster/eu/node/n-7");
    for (const oid of [OID_PRINCIPAL_KIND, OID_CLUSTER, OID_GRANT]) expect(text).toContain(oid);
  });

  it("yield a principal; mismatching or foreign ones are refused", async () => {
    const admin = await pki.issue({ kind: "admin", id: "alice", grant: "platform-admin" });
    const principal = principalFromCertificate(certificateDer(admin), "acme.example");
    expect(principal).toMatchObject({ kind: "admin", id: "alice", adminRole: "platform-admin" });
    expect(() => principalFromCertificate(certificateDer(admin), "other.example")).toThrow(/trust domain/);
    const noRole = await pki.issue({ kind: "admin", id: "bob" });
    expect(() => principalFromCertificate(certificateDer(noRole), "acme.example")).toThrow(/admin role/);
  });
});

async function toWebKeys(
  pair: { privateKey: KeyObject; publicKey: KeyObject },
  alg: Algorithm & Record<string, unknown>,
) {
  return {
    privateKey: (await webcrypto.subtle.importKey(
      "pkcs8",
      pair.privateKey.export({ type: "pkcs8", format: "der" }),
      alg,
      true,
      ["sign"],
    )) as CryptoKey,
    publicKey: (await webcrypto.subtle.importKey(
      "spki",
      pair.publicKey.export({ type: "spki", format: "der" }),
      alg,
      true,
      ["verify"],
    )) as CryptoKey,
  };
}
