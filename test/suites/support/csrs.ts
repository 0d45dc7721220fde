// CSRs of every shape a caller might send: the right key, the wrong or weak key types, and CSRs that ask
// for what only the CA decides (CA:true, foreign SANs, another principal's name or Fabric claims).
import { webcrypto } from "node:crypto";
import { OID_GRANT, OID_PRINCIPAL_KIND, claimExtensions, normalizePem, toPem, x509 } from "@fabric/platform";

export type KeyType = "p256" | "p384" | "rsa2048" | "rsa1024" | "ed25519";

const ALGORITHMS: Record<
  KeyType,
  { generate: EcKeyGenParams | RsaHashedKeyGenParams | Algorithm; sign: Algorithm | EcdsaParams }
> = {
  p256: {
    generate: { name: "ECDSA", namedCurve: "P-256" },
    sign: { name: "ECDSA", hash: "SHA-256" } as EcdsaParams,
  },
  p384: {
    generate: { name: "ECDSA", namedCurve: "P-384" },
    sign: { name: "ECDSA", hash: "SHA-384" } as EcdsaParams,
  },
  rsa2048: {
    generate: {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    sign: { name: "RSASSA-PKCS1-v1_5" },
  },
  rsa1024: {
    generate: {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 1024,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    sign: { name: "RSASSA-PKCS1-v1_5" },
  },
  ed25519: { generate: { name: "Ed25519" }, sign: { name: "Ed25519" } },
};

export interface CsrOptions {
  commonName?: string;
  /** Ask for a CA certificate (basicConstraints CA:true, keyCertSign). */
  askCa?: boolean;
  /** URI and DNS SANs to ask for. */
  uris?: string[];
  dnsNames?: string[];
  /** Fabric claims to ask for (principal kind and grant extensions). */
  claims?: { kind: "admin" | "service" | "node" | "user"; grant: string };
}

export interface Csr {
  csrPem: string;
  privateKeyPem: string;
}

export async function makeCsr(type: KeyType = "p256", options: CsrOptions = {}): Promise<Csr> {
  const algorithm = ALGORITHMS[type];
  const keys = (await webcrypto.subtle.generateKey(algorithm.generate, true, [
    "sign",
    "verify",
  ])) as CryptoKeyPair;
  const extensions: x509.Extension[] = [];
  if (options.askCa) {
    extensions.push(new x509.BasicConstraintsExtension(true, undefined, true));
    extensions.push(
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    );
  }
  const names: x509.JsonGeneralName[] = [
    ...(options.uris ?? []).map((value) => ({ type: "url" as const, value })),
    ...(options.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
  ];
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, false));
  if (options.claims) {
    const raw = claimExtensions({
      trustDomain: "ignored",
      kind: options.claims.kind,
      id: "ignored",
      grant: options.claims.grant,
    });
    for (const ext of raw.filter((e) => e.oid === OID_PRINCIPAL_KIND || e.oid === OID_GRANT)) {
      extensions.push(new x509.Extension(ext.oid, false, new Uint8Array(ext.value)));
    }
  }
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${options.commonName ?? "csr"}`,
    keys,
    signingAlgorithm: algorithm.sign,
    extensions,
  });
  const pkcs8 = await webcrypto.subtle.exportKey("pkcs8", keys.privateKey);
  return { csrPem: normalizePem(csr.toString("pem")), privateKeyPem: toPem(pkcs8, "PRIVATE KEY") };
}

/** The CSR with one bit of its signature flipped: it no longer proves possession of its key. */
export function withBrokenSignature(csrPem: string): string {
  const der = Buffer.from(new x509.Pkcs10CertificateRequest(csrPem).rawData);
  const at = der.length - 5;
  der.writeUInt8(der.readUInt8(at) ^ 0x01, at);
  return toPem(der, "CERTIFICATE REQUEST");
}

/**
 * Found by the platform CSR fuzzer (FABRIC_FUZZ_SEED=2191505380): a CSR whose SubjectPublicKeyInfo names
 * EC P-384 but whose key is the single byte 0x00 (the point at infinity), followed by stray bytes.
 * node:crypto's createPublicKey accepts that key, and reading its asymmetricKeyDetails then fails a
 * native assertion (crypto_ec.cc GetEcKeyDetail: "(ec) != nullptr") and aborts the whole process.
 */
export const DEGENERATE_EC_KEY_CSR =
  "-----BEGIN CERTIFICATE REQUEST-----\nMIIBPjCBxQIBADAOMQwwCgYDVQQDEwNjc3IwdjAQBgcqhkjOPQIBBgUrgQQAIgMC\nAQAwDjEMMAoGA1UEAxMDY3NyMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEWYpJJKaA\nUaYATRjH+wrrbkiGfpHN3+niFU4MAhsCGvWmJpQrFul4g2AlYQTo9w3oeEkUxxwI\n151MLQsHAAUnvd7sst6hqjHaY/+KQL+tP9Dr9bndsWOJVY5G3t6jOYWvoDgwNgYJ\nKoZIhvcNAQkOMSkwJzAlBgNVHREEHjAchhVzcGlmZmU6Ly94L3NlcnZpY2UvY2GC\nA2EuYjAKBggqhkjOPQQDAwNoADBlAjAmluep7nZHH1GEkiL8758imAYfEmzWvEnw\nKs7IMcpcsCe20P7vfxDjFxN5xMDoCpwCMQCdX5BbReSazc9J82BNM7nrzdcAPwsk\ndiSZq9bvfpsnUBpvyn7St5UK4uazXDQtBVs=\n-----END CERTIFICATE REQUEST-----\n";
