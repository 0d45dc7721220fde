import { createPrivateKey, createPublicKey } from "node:crypto";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  FabricError,
  buildCsr,
  generateP256KeyPair,
  issueLeafCertificate,
  x509,
  type IdentityClaims,
} from "@fabric/platform";
import { createTestPki, type TestPki } from "@fabric/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LeafIssuer, ipAddressBytes, newSerialHex } from "../src/leaf-issuer.js";
import { verifyCsrPem } from "../src/csr-verifier.js";
import { childrenOf, rawOf, readTlv } from "../src/der.js";

const CRL = "http://127.0.0.1:7410/crl";
const OCSP = "http://127.0.0.1:7410/ocsp";

let pki: TestPki;
let issuer: LeafIssuer;
let dir: string;

beforeAll(async () => {
  pki = await createTestPki("fabric.test");
  issuer = await LeafIssuer.create({
    issuerCertificatePem: pki.intermediatePem,
    issuerKey: createPrivateKey(pki.intermediateKeyPem),
    crlUrl: CRL,
    ocspUrl: OCSP,
  });
  dir = mkdtempSync(join(tmpdir(), "fabric-ca-issuer-"));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function spkiOf(publicKeyPem: string): Buffer {
  return createPublicKey(publicKeyPem).export({ type: "spki", format: "der" });
}

function openssl(args: string[], input?: string): string {
  return execFileSync("openssl", args, {
    encoding: "utf8",
    stdio: ["pipe", "pipe", "ignore"],
    ...(input ? { input } : {}),
  });
}

const CASES: { name: string; claims: Omit<IdentityClaims, "trustDomain">; dns?: string[]; ips?: string[] }[] =
  [
    {
      name: "node",
      claims: { kind: "node", id: "n-1", cluster: "c1", organization: "o1", grant: "entry-node,relay-node" },
    },
    {
      name: "service",
      claims: { kind: "service", id: "registry", grant: "registry" },
      dns: ["localhost", "registry"],
      ips: ["127.0.0.1", "::1"],
    },
    { name: "cluster admin", claims: { kind: "admin", id: "carol", cluster: "c1", grant: "cluster-admin" } },
    {
      name: "user with an id outside PrintableString",
      claims: { kind: "user", id: "dev_01", grant: "developer" },
    },
  ];

describe("the fast issuance path", () => {
  it.each(CASES)(
    "issues the same certificate profile as the reference issuer ($name)",
    async ({ claims, dns, ips }) => {
      const key = generateP256KeyPair();
      const spki = spkiOf(key.publicKeyPem);
      const serialHex = newSerialHex();
      const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
      const notAfter = new Date(notBefore.getTime() + 86_400_000);
      const full = { ...claims, trustDomain: "fabric.test" };
      const fast = issuer.issue({
        claims: full,
        spki,
        notBefore,
        notAfter,
        serialHex,
        dnsNames: dns ?? [],
        ipAddresses: ips ?? [],
      });
      const referencePem = await issueLeafCertificate({
        claims: full,
        subjectPublicKeySpki: spki,
        notBefore,
        notAfter,
        issuer: { certificatePem: pki.intermediatePem, privateKeyPem: pki.intermediateKeyPem },
        serialHex,
        crlUrl: CRL,
        ocspUrl: OCSP,
        ...(dns ? { dnsNames: dns } : {}),
        ...(ips ? { ipAddresses: ips } : {}),
      });
      const a = new x509.X509Certificate(fast.pem);
      const b = new x509.X509Certificate(referencePem);
      expect(a.subject).toBe(b.subject);
      expect(a.issuer).toBe(b.issuer);
      expect(a.serialNumber).toBe(b.serialNumber);
      expect(a.notBefore).toEqual(b.notBefore);
      expect(a.notAfter).toEqual(b.notAfter);
      expect(a.signatureAlgorithm).toEqual(b.signatureAlgorithm);
      expect(Buffer.from(a.publicKey.rawData)).toEqual(Buffer.from(b.publicKey.rawData));
      const describe = (c: x509.X509Certificate) =>
        c.extensions.map((e) => ({
          oid: e.type,
          critical: e.critical,
          value: Buffer.from(e.value).toString("hex"),
        }));
      expect(describe(a)).toEqual(describe(b));
      // Only the signature differs (ECDSA is randomized); the whole TBSCertificate is byte-identical.
      const tbs = (der: ArrayBuffer) => {
        const buf = Buffer.from(der);
        return rawOf(buf, childrenOf(buf, readTlv(buf, 0))[0]!).toString("hex");
      };
      expect(tbs(a.rawData)).toBe(tbs(b.rawData));
      expect(
        await a.verify({
          publicKey: new x509.X509Certificate(pki.intermediatePem).publicKey,
          signatureOnly: true,
        }),
      ).toBe(true);
      expect(fast.spiffeId).toBe(a.getExtension(x509.SubjectAlternativeNameExtension)!.names.items[0]!.value);
    },
  );

  it("passes openssl verify root → intermediate → leaf, and openssl shows the SPIFFE URI and Fabric OIDs", () => {
    const key = generateP256KeyPair();
    const leaf = issuer.issue({
      claims: {
        trustDomain: "fabric.test",
        kind: "node",
        id: "n-7",
        cluster: "c9",
        organization: "o2",
        grant: "entry-node",
      },
      spki: spkiOf(key.publicKeyPem),
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
    });
    writeFileSync(join(dir, "root.pem"), pki.rootPem);
    writeFileSync(join(dir, "intermediate.pem"), pki.intermediatePem);
    writeFileSync(join(dir, "leaf.pem"), leaf.pem);
    const verified = openssl([
      "verify",
      "-CAfile",
      join(dir, "root.pem"),
      "-untrusted",
      join(dir, "intermediate.pem"),
      "-purpose",
      "sslclient",
      join(dir, "leaf.pem"),
    ]);
    expect(verified.trim()).toBe(`${join(dir, "leaf.pem")}: OK`);
    const text = openssl(["x509", "-noout", "-text", "-in", join(dir, "leaf.pem")]);
    expect(text).toContain("URI:spiffe://fabric.test/cluster/c9/node/n-7");
    for (const oid of [
      "1.3.6.1.4.1.99999.1.1",
      "1.3.6.1.4.1.99999.1.2",
      "1.3.6.1.4.1.99999.1.3",
      "1.3.6.1.4.1.99999.1.4",
    ]) {
      expect(text).toContain(oid);
    }
    expect(text).toContain("CA:FALSE");
    expect(text).toMatch(/Digital Signature/);
    expect(text).toMatch(/TLS Web Client Authentication/);
    expect(text).not.toMatch(/TLS Web Server Authentication/);
    expect(text).toContain(`URI:${CRL}`);
    expect(text).toContain(`OCSP - URI:${OCSP}`);
    expect(text).toMatch(/Subject Key Identifier/);
    expect(text).toMatch(/Authority Key Identifier/);
  });

  it("refuses to issue when a required claim extension would be missing", () => {
    const spki = spkiOf(generateP256KeyPair().publicKeyPem);
    const attempt = (claims: IdentityClaims) => () =>
      issuer.issue({ claims, spki, notBefore: new Date(), notAfter: new Date(Date.now() + 60_000) });
    const cases: IdentityClaims[] = [
      { trustDomain: "fabric.test", kind: "node", id: "n-1" },
      { trustDomain: "fabric.test", kind: "service", id: "registry" },
      { trustDomain: "fabric.test", kind: "admin", id: "a" },
      { trustDomain: "fabric.test", kind: "admin", id: "a", grant: "cluster-admin" },
      { trustDomain: "fabric.test", kind: "admin", id: "a", grant: "org-admin" },
    ];
    for (const claims of cases) {
      let thrown: unknown;
      try {
        attempt(claims)();
      } catch (err) {
        thrown = err;
      }
      expect(thrown, JSON.stringify(claims)).toBeInstanceOf(FabricError);
      expect((thrown as FabricError).kind).toBe("failed-precondition");
      expect((thrown as FabricError).message).toMatch(/refusing to issue/);
    }
  });

  it("encodes IPv4 and IPv6 SANs", () => {
    expect(ipAddressBytes("127.0.0.1").toString("hex")).toBe("7f000001");
    expect(ipAddressBytes("::1").toString("hex")).toBe("00000000000000000000000000000001");
    expect(ipAddressBytes("2001:db8::8:800:200c:417a").toString("hex")).toBe(
      "20010db80000000000080800200c417a",
    );
    expect(ipAddressBytes("::ffff:10.0.0.1").toString("hex")).toBe("00000000000000000000ffff0a000001");
  });

  it("makes 128-bit serials whose hex has no leading zero", () => {
    for (let i = 0; i < 200; i++) expect(newSerialHex()).toMatch(/^[1-7][0-9a-f]{31}$/);
  });
});

describe("CSR verification", () => {
  it("takes the key from a valid P-256 CSR", async () => {
    const key = generateP256KeyPair();
    const verified = verifyCsrPem(await buildCsr(key.privateKeyPem, "anything"));
    expect(verified.spki).toEqual(spkiOf(key.publicKeyPem));
  });

  it("refuses a CSR whose signature does not verify", async () => {
    const csr = await buildCsr(generateP256KeyPair().privateKeyPem, "n-1");
    const der = x509.PemConverter.decodeFirst(csr);
    const bytes = Buffer.from(der);
    bytes[bytes.length - 5] = bytes[bytes.length - 5]! ^ 0xff;
    const tampered = x509.PemConverter.encode(bytes, "CERTIFICATE REQUEST");
    expect(() => verifyCsrPem(tampered)).toThrow(/signature does not verify/);
  });

  it("refuses a CSR whose key is swapped for another (no proof of possession)", async () => {
    const real = Buffer.from(
      x509.PemConverter.decodeFirst(await buildCsr(generateP256KeyPair().privateKeyPem, "x")),
    );
    const other = spkiOf(generateP256KeyPair().publicKeyPem);
    const original = real.indexOf(Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex"));
    other.copy(real, original);
    expect(() => verifyCsrPem(x509.PemConverter.encode(real, "CERTIFICATE REQUEST"))).toThrow(
      /signature does not verify/,
    );
  });

  it("refuses a CSR whose key is not a point on P-256", async () => {
    const csr = Buffer.from(
      x509.PemConverter.decodeFirst(await buildCsr(generateP256KeyPair().privateKeyPem, "x")),
    );
    const prefix = csr.indexOf(Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex"));
    const lastByteOfY = prefix + 26 + 64;
    csr[lastByteOfY] = csr[lastByteOfY]! ^ 0x01;
    expect(() => verifyCsrPem(x509.PemConverter.encode(csr, "CERTIFICATE REQUEST"))).toThrow(
      /public key cannot be read/,
    );
  });

  it.each([
    ["RSA 2048", ["-newkey", "rsa:2048"]],
    ["EC P-384", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]],
  ])("refuses a %s key naming the accepted type", (described, keyArgs) => {
    const csr = openssl(["req", "-new", ...keyArgs, "-nodes", "-subj", "/CN=x", "-keyout", "/dev/null"]);
    let thrown: unknown;
    try {
      verifyCsrPem(csr);
    } catch (err) {
      thrown = err;
    }
    expect((thrown as FabricError).kind).toBe("invalid-argument");
    expect((thrown as Error).message).toContain(`the CSR's key is ${described}`);
    expect((thrown as Error).message).toContain("ECDSA P-256");
  });

  it("refuses what is not a CSR", () => {
    expect(() => verifyCsrPem("hello")).toThrow(/PEM PKCS#10/);
    expect(() =>
      verifyCsrPem(
        x509.PemConverter.encode(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]), "CERTIFICATE REQUEST"),
      ),
    ).toThrow(/not a well-formed PKCS#10/);
    expect(() => verifyCsrPem(`${"x".repeat(17_000)}`)).toThrow(/larger than/);
  });
});
