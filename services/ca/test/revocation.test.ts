import { spawnSync } from "node:child_process";
import { createPrivateKey, createPublicKey, randomBytes, verify } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import {
  CRLNumber,
  CRLReason,
  CertificateList,
  Extension,
  Name,
  RevokedCertificate,
  TBSCertList,
  Time,
  Version,
  id_ce_cRLNumber,
  id_ce_cRLReasons,
} from "@peculiar/asn1-x509";
import {
  CaService,
  RevocationReason,
  SignRequestSchema,
  type WatchRevocationsResponse,
} from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import {
  RevocationSet,
  buildCsr,
  createLogger,
  createPool,
  followRevocations,
  generateP256KeyPair,
  inspectCertificate,
  listAudit,
  migrate,
  splitCertificates,
  type Pool,
  type TlsCredentials,
} from "@fabric/platform";
import { createTestDatabase, createTestPki } from "@fabric/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFabric, type Fabric } from "../../../test/harness/fabric.js";
import { CrlPublisher } from "../src/crl.js";
import { childrenOf, rawOf, readTlv, valueOf, wholeSeconds } from "../src/der.js";
import { caDefinition } from "../src/service.js";
import { SigningAuthority } from "../src/signing-authority.js";

let fabric: Fabric;
let pool: Pool;
let dir: string;
const ids: Record<string, TlsCredentials> = {};

beforeAll(async () => {
  fabric = await startFabric({ services: ["ca"], env: { ca: { FABRIC_CRL_DEBOUNCE_MS: "50" } } });
  pool = createPool({ url: fabric.databaseUrl, schema: "ca" });
  dir = mkdtempSync(join(tmpdir(), "fabric-ca-revocation-"));
  writeFileSync(join(dir, "root.pem"), fabric.admin.caBundlePem);
  writeFileSync(join(dir, "intermediate.pem"), fabric.admin.chainPem.join(""));
  ids.enrollment = fabric.serviceIdentity("enrollment");
  ids.registry = fabric.serviceIdentity("registry");
  ids.router = fabric.serviceIdentity("router");
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
  rmSync(dir, { recursive: true, force: true });
});

const ca = (who: string | TlsCredentials) =>
  fabric.client(CaService, "ca", typeof who === "string" ? ids[who]! : who);

async function refusal(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call succeeded but should have been refused");
}

/** A node identity issued through Sign, as enrollment would get it. */
async function signedNode(id: string, cluster = "c1"): Promise<TlsCredentials & { serial: string }> {
  const key = generateP256KeyPair();
  const res = await ca("enrollment").sign(
    create(SignRequestSchema, {
      csrPem: await buildCsr(key.privateKeyPem, id),
      principalKind: PrincipalKind.NODE,
      principalId: id,
      clusterId: cluster,
      authorizationRef: `join-request/${id}`,
    }),
  );
  return {
    privateKeyPem: key.privateKeyPem,
    certificatePem: res.certificatePem,
    chainPem: res.chainPem.flatMap(splitCertificates),
    caBundlePem: res.caBundlePem,
    serial: res.serial,
  };
}

/** Runs openssl; returns stdout and stderr together (openssl reports verification on stderr). */
function openssl(args: string[]): string {
  const res = spawnSync("openssl", args, { encoding: "utf8" });
  if (res.status !== 0) throw new Error(`openssl ${args[0]} failed: ${res.stderr}`);
  return `${res.stdout}${res.stderr}`;
}

/** `openssl ocsp` against the CA's responder: the status line and the response verification. */
function ocspCheck(
  certificatePem: string,
  name: string,
  issuerFile = join(dir, "intermediate.pem"),
  extra: string[] = [],
): string {
  const file = join(dir, `${name}.pem`);
  writeFileSync(file, certificatePem);
  return openssl([
    "ocsp",
    ...extra,
    "-issuer",
    issuerFile,
    "-cert",
    file,
    "-url",
    `${fabric.urls.ca!.http}/ocsp`,
    "-CAfile",
    join(dir, "root.pem"),
  ]);
}

/** The CA's /crl as `openssl crl -text` prints it, with openssl's check of its signature. */
async function crlText(): Promise<string> {
  const der = Buffer.from(await (await fetch(`${fabric.urls.ca!.http}/crl`)).arrayBuffer());
  writeFileSync(join(dir, "crl.der"), der);
  const chain = join(dir, "chain.pem");
  writeFileSync(chain, fabric.admin.chainPem.join("") + fabric.admin.caBundlePem);
  return openssl(["crl", "-inform", "DER", "-in", join(dir, "crl.der"), "-CAfile", chain, "-noout", "-text"]);
}

async function eventually<T>(
  probe: () => Promise<T | undefined>,
  what: string,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe("Revoke, CRL and OCSP", () => {
  it("answers OCSP good, then revoked after Revoke, and the CRL lists the serial", async () => {
    const node = await signedNode("n-ocsp");
    const good = ocspCheck(node.certificatePem, "good");
    expect(good).toMatch(/good\.pem: good/);
    expect(good).toMatch(/Response verify OK/);
    expect(good).not.toMatch(/no nonce/i);

    const res = await ca("platformAdmin").revoke({
      target: { case: "serial", value: node.serial.toUpperCase() },
      reason: RevocationReason.KEY_COMPROMISE,
      comment: "laptop stolen",
    });
    expect(res.revokedSerials).toEqual([node.serial]);
    expect(res.version).toBeGreaterThan(0n);

    const revoked = ocspCheck(node.certificatePem, "revoked");
    expect(revoked).toMatch(/revoked\.pem: revoked/);
    expect(revoked).toMatch(/Reason: keyCompromise/);
    expect(revoked).toMatch(/Response verify OK/);

    const text = await eventually(async () => {
      const t = await crlText();
      return t.includes(`Serial Number: ${node.serial.toUpperCase()}`) ? t : undefined;
    }, "the CRL to list the serial");
    expect(text).toMatch(/verify OK/);
    expect(text).toMatch(/Next Update:/);
    expect(text).toMatch(/X509v3 CRL Reason Code:\s+Key Compromise/);
    expect(text).toMatch(/X509v3 CRL Number/);

    // revoking again changes nothing and says so
    const again = await ca("platformAdmin").revoke({
      target: { case: "serial", value: node.serial },
      reason: RevocationReason.SUPERSEDED,
    });
    expect(again.revokedSerials).toEqual([]);
    const info = (await ca("platformAdmin").listCertificates({ principalId: "n-ocsp" })).certificates[0]!;
    expect(info.revocationReason).toBe(RevocationReason.KEY_COMPROMISE);
    const audit = await listAudit(
      pool,
      { action: "certificate.revoke", targetId: node.serial },
      { limit: 10 },
    );
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ actorId: "platform-admin", actorKind: "admin", outcome: "success" });
  });

  it("drops certificates from the CRL once they expire", async () => {
    const shortLived = await fabric.issue(
      { kind: "node", id: "n-short", cluster: "c1" },
      { notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 3_000) },
    );
    const serial = inspectCertificate(shortLived.certificatePem).serialHex.toUpperCase();
    await ca("platformAdmin").revoke({ target: { case: "serial", value: serial } });
    await eventually(
      async () => ((await crlText()).includes(`Serial Number: ${serial}`) ? true : undefined),
      "the CRL entry",
    );
    await new Promise((r) => setTimeout(r, 3_200));
    // the next rebuild (here: caused by another revocation) leaves the expired certificate out
    const other = await signedNode("n-after-expiry");
    await ca("platformAdmin").revoke({ target: { case: "serial", value: other.serial } });
    const text = await eventually(async () => {
      const t = await crlText();
      return t.includes(`Serial Number: ${other.serial.toUpperCase()}`) ? t : undefined;
    }, "the rebuilt CRL");
    expect(text).not.toContain(`Serial Number: ${serial}`);
  });

  it("serves OCSP over GET too, and says unknown for certificates it did not issue", async () => {
    const node = await signedNode("n-get");
    const certFile = join(dir, "get.pem");
    writeFileSync(certFile, node.certificatePem);
    openssl([
      "ocsp",
      "-issuer",
      join(dir, "intermediate.pem"),
      "-cert",
      certFile,
      "-reqout",
      join(dir, "req.der"),
    ]);
    const request = readFileSync(join(dir, "req.der"));
    const res = await fetch(`${fabric.urls.ca!.http}/ocsp/${encodeURIComponent(request.toString("base64"))}`);
    expect(res.headers.get("content-type")).toBe("application/ocsp-response");
    writeFileSync(join(dir, "resp.der"), Buffer.from(await res.arrayBuffer()));
    expect(openssl(["ocsp", "-respin", join(dir, "resp.der"), "-resp_text", "-noverify"])).toMatch(
      /Cert Status: good/,
    );

    const foreign = await createTestPki("fabric.test");
    const stranger = await foreign.issue({ kind: "node", id: "n-1", cluster: "c1" });
    writeFileSync(join(dir, "foreign-int.pem"), foreign.intermediatePem);
    // (our intermediate may not vouch for a foreign issuer's certificates, so openssl is told not to verify)
    const answer = ocspCheck(stranger.certificatePem, "stranger", join(dir, "foreign-int.pem"), [
      "-noverify",
    ]);
    expect(answer).toMatch(/stranger\.pem: unknown/);
  });

  it("refuses final-less reasons, missing targets and unknown serials", async () => {
    const node = await signedNode("n-bad");
    for (const reason of [
      RevocationReason.CERTIFICATE_HOLD,
      RevocationReason.REMOVE_FROM_CRL,
      7 as RevocationReason,
    ]) {
      const err = await refusal(
        ca("platformAdmin").revoke({ target: { case: "serial", value: node.serial }, reason }),
      );
      expect(err.code).toBe(Code.InvalidArgument);
    }
    expect((await refusal(ca("platformAdmin").revoke({}))).code).toBe(Code.InvalidArgument);
    expect(
      (await refusal(ca("platformAdmin").revoke({ target: { case: "serial", value: "zz" } }))).code,
    ).toBe(Code.InvalidArgument);
    const missing = await refusal(ca("platformAdmin").revoke({ target: { case: "serial", value: "7abc" } }));
    expect(missing.code).toBe(Code.NotFound);
    expect(
      (await ca("platformAdmin").listCertificates({ principalId: "n-bad" })).certificates[0]!.revokedAt,
    ).toBeUndefined();
  });

  it("lets admins, enrollment and registry revoke; cluster-admins only in their cluster", async () => {
    for (const who of ["node", "user", "orgAdmin", "router"]) {
      const node = await signedNode(`n-refused-${who}`);
      const err = await refusal(ca(who).revoke({ target: { case: "serial", value: node.serial } }));
      expect(err.code, who).toBe(Code.PermissionDenied);
    }
    for (const who of ["enrollment", "registry", "clusterAdmin"]) {
      const node = await signedNode(`n-allowed-${who}`);
      const res = await ca(who).revoke({ target: { case: "serial", value: node.serial } });
      expect(res.revokedSerials, who).toEqual([node.serial]);
    }
    const elsewhere = await signedNode("n-c2", "c2");
    const err = await refusal(
      ca("clusterAdmin").revoke({ target: { case: "serial", value: elsewhere.serial } }),
    );
    expect(err.code).toBe(Code.PermissionDenied);
    expect(err.rawMessage).toMatch(/only revoke certificates of cluster "c1"/);
    const principalErr = await refusal(
      ca("clusterAdmin").revoke({
        target: { case: "principal", value: { kind: PrincipalKind.NODE, id: "n-c2" } },
        clusterId: "c2",
      }),
    );
    expect(principalErr.code).toBe(Code.PermissionDenied);
    const refused = await listAudit(pool, { action: "certificate.revoke", actorId: "carol" }, { limit: 10 });
    expect(refused.some((e) => e.outcome === "refused" && e.targetId === elsewhere.serial)).toBe(true);
  });

  it("revokes a principal: every current certificate, and later ones start after the revocation", async () => {
    const first = await signedNode("n-9");
    const second = await signedNode("n-9");
    const followed = new RevocationSet();
    const stop = new AbortController();
    let synced!: () => void;
    const ready = new Promise<void>((r) => (synced = r));
    void followRevocations(fabric.client(CaService, "ca", ids.registry!), followed, {
      logger: createLogger({ service: "test", level: "silent" }),
      signal: stop.signal,
      onSynced: () => synced(),
    });
    await ready;
    const res = await ca("platformAdmin").revoke({
      target: { case: "principal", value: { kind: PrincipalKind.NODE, id: "n-9" } },
      reason: RevocationReason.PRIVILEGE_WITHDRAWN,
    });
    expect(new Set(res.revokedSerials)).toEqual(new Set([first.serial, second.serial]));
    const identity = (creds: TlsCredentials) => {
      const f = inspectCertificate(creds.certificatePem);
      return { serialHex: f.serialHex, kind: "node", id: "n-9", notBefore: f.notBefore };
    };
    await eventually(
      async () =>
        followed.isRevoked(identity(first)) && followed.isRevoked(identity(second)) ? true : undefined,
      "the follower to see both",
    );
    expect(followed.size).toBeGreaterThanOrEqual(3); // two serials and the principal-wide entry

    // re-enrollment right away: the new certificate starts after the principal-wide revocation
    const fresh = await signedNode("n-9");
    const freshFacts = inspectCertificate(fresh.certificatePem);
    expect(freshFacts.notBefore.getTime()).toBeGreaterThan(timestampDate(res.revokedAt!).getTime());
    expect(followed.isRevoked(identity(fresh))).toBe(false);
    // and it works: the revoked one is refused by the CA, the fresh one is served
    expect((await refusal(ca(first).getTrustBundle({}))).code).toBe(Code.Unauthenticated);
    await new Promise((r) => setTimeout(r, Math.max(0, freshFacts.notBefore.getTime() - Date.now() + 50)));
    expect((await ca(fresh).getTrustBundle({})).trustDomain).toBe("fabric.test");
    stop.abort();
  });
});

describe("key compromise", () => {
  /** Asks for a certificate for `key` as `who` would: its serial, or the refusal's code. */
  async function signWith(
    key: { privateKeyPem: string },
    who: string,
    init: MessageInitShape<typeof SignRequestSchema>,
  ): Promise<string> {
    const res = await ca(who).sign(
      create(SignRequestSchema, {
        csrPem: await buildCsr(key.privateKeyPem, "ignored"),
        principalKind: PrincipalKind.NODE,
        principalId: "n-key",
        clusterId: "c1",
        authorizationRef: "test/key-compromise",
        ...init,
      }),
    );
    return res.serial;
  }
  const statusOf = async (serial: string) =>
    (await ca("platformAdmin").listCertificates({ pageSize: 1000 })).certificates.find(
      (c) => c.serial === serial,
    )?.revocationReason;

  it("refuses the key to every later Sign, whoever asks and for whom, and revokes its other certificates", async () => {
    const key = generateP256KeyPair();
    const reported = await signWith(key, "enrollment", { principalId: "n-leaked" });
    const sibling = await signWith(key, "enrollment", { principalId: "n-sibling", clusterId: "c2" });
    const res = await ca("platformAdmin").revoke({
      target: { case: "serial", value: reported },
      reason: RevocationReason.KEY_COMPROMISE,
    });
    expect(new Set(res.revokedSerials)).toEqual(new Set([reported, sibling]));
    expect(await statusOf(sibling)).toBe(RevocationReason.KEY_COMPROMISE);

    const before = (await pool.query("SELECT count(*)::int AS n FROM certificates")).rows[0].n as number;
    for (const [who, init] of [
      ["enrollment", { principalId: "n-leaked" }],
      ["enrollment", { principalId: "n-new", clusterId: "c3" }],
      [
        "enrollment",
        { principalKind: PrincipalKind.USER, principalId: "dev-new", clusterId: "", grants: ["developer"] },
      ],
      [
        "registry",
        {
          principalKind: PrincipalKind.SERVICE,
          principalId: "registry",
          clusterId: "",
          grants: ["registry"],
        },
      ],
    ] as [string, MessageInitShape<typeof SignRequestSchema>][]) {
      const err = await refusal(signWith(key, who, init));
      expect([err.code, err.rawMessage], who).toEqual([
        Code.FailedPrecondition,
        expect.stringMatching(/revoked for key compromise/),
      ]);
    }
    expect((await pool.query("SELECT count(*)::int AS n FROM certificates")).rows[0].n).toBe(before);
    const refused = await listAudit(pool, { action: "certificate.issue", actorId: "registry" }, { limit: 5 });
    expect(refused[0]).toMatchObject({ outcome: "refused" });
    const reportedEvents = await listAudit(pool, { action: "key.compromise" }, { limit: 5 });
    expect(reportedEvents.map((e) => e.targetId)).toContain(
      (await pool.query("SELECT public_key_sha256 FROM certificates WHERE serial = $1", [reported])).rows[0]
        .public_key_sha256,
    );
    // Another key is certified as ever.
    expect(await signWith(generateP256KeyPair(), "enrollment", { principalId: "n-leaked" })).toMatch(
      /^[0-9a-f]+$/,
    );
  });

  it("reports the key of a certificate already revoked for another reason", async () => {
    const key = generateP256KeyPair();
    const serial = await signWith(key, "enrollment", { principalId: "n-superseded" });
    await ca("platformAdmin").revoke({
      target: { case: "serial", value: serial },
      reason: RevocationReason.SUPERSEDED,
    });
    const res = await ca("platformAdmin").revoke({
      target: { case: "serial", value: serial },
      reason: RevocationReason.KEY_COMPROMISE,
    });
    expect(res.revokedSerials).toEqual([]);
    expect((await refusal(signWith(key, "enrollment", { principalId: "n-superseded" }))).code).toBe(
      Code.FailedPrecondition,
    );
  });

  it("lets a cluster-admin stop a key everywhere but revoke only in its own cluster", async () => {
    const key = generateP256KeyPair();
    const mine = await signWith(key, "enrollment", { principalId: "n-shared", clusterId: "c1" });
    const theirs = await signWith(key, "enrollment", { principalId: "n-shared", clusterId: "c2" });
    const res = await ca("clusterAdmin").revoke({
      target: { case: "principal", value: { kind: PrincipalKind.NODE, id: "n-shared" } },
      reason: RevocationReason.KEY_COMPROMISE,
    });
    expect(res.revokedSerials).toEqual([mine]);
    expect(await statusOf(theirs)).toBe(RevocationReason.UNSPECIFIED);
    expect(
      (await refusal(signWith(key, "enrollment", { principalId: "n-shared", clusterId: "c2" }))).code,
    ).toBe(Code.FailedPrecondition);
  });
});

/** Reads a WatchRevocations stream into `messages` until aborted or broken. */
function watch(who: TlsCredentials, resumeFromVersion: bigint) {
  const messages: WatchRevocationsResponse[] = [];
  const stop = new AbortController();
  const done = (async () => {
    for await (const m of ca(who).watchRevocations(
      { resumeFromVersion },
      { signal: stop.signal, timeoutMs: 0 },
    )) {
      messages.push(m);
    }
  })().then(
    () => undefined,
    (err: unknown) => ConnectError.from(err),
  );
  const until = (pred: (m: WatchRevocationsResponse[]) => boolean, what: string) =>
    eventually(async () => (pred(messages) ? true : undefined), what);
  return { messages, stop, done, until };
}

const cases = (ms: WatchRevocationsResponse[]) => ms.map((m) => m.event.case);

describe("WatchRevocations", () => {
  it("is open to services and platform-admins only", async () => {
    for (const who of ["node", "user", "clusterAdmin", "orgAdmin"]) {
      const w = watch(ids[who]!, 0n);
      expect((await w.done)?.code, who).toBe(Code.PermissionDenied);
    }
    for (const who of ["registry", "router", "enrollment", "platformAdmin"]) {
      const w = watch(ids[who]!, 0n);
      await w.until((m) => m.some((x) => x.event.case === "synced"), `${who} synced`);
      w.stop.abort();
      await w.done;
    }
  });

  it("cuts a revoked identity's open stream within a second", async () => {
    const eve = await fabric.issue({ kind: "admin", id: "eve", grant: "platform-admin" });
    const w = watch(eve, 0n);
    await w.until((m) => m.some((x) => x.event.case === "synced"), "eve's stream to sync");
    const started = Date.now();
    await ca("platformAdmin").revoke({
      target: { case: "serial", value: inspectCertificate(eve.certificatePem).serialHex },
    });
    const err = await w.done;
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(err?.code).toBe(Code.Unauthenticated);
    expect(err?.rawMessage).toMatch(/revoked/);
    expect((await refusal(ca(eve).getTrustBundle({}))).code).toBe(Code.Unauthenticated);
  });

  it(
    "lists, then streams; resumes after a CA restart without missing a revocation",
    { timeout: 90_000 },
    async () => {
      const first = watch(ids.registry!, 0n);
      await first.until((m) => m.some((x) => x.event.case === "synced"), "the initial list");
      expect(cases(first.messages)[0]).toBe("list");
      const list = first.messages[0]!.event;
      expect(list.case === "list" && list.value.reset).toBe(true);
      const before = await signedNode("n-before");
      await ca("platformAdmin").revoke({ target: { case: "serial", value: before.serial } });
      await first.until(
        (m) => m.some((x) => x.event.case === "revoked" && x.event.value.serial === before.serial),
        "the live revocation",
      );
      const last = first.messages.at(-1)!.event;
      const held = last.case === "revoked" ? last.value.version : 0n;

      // The CA dies; a revocation happens after it is back but before the watcher reconnects.
      await fabric.kill("ca");
      expect((await first.done)?.code).toBeDefined();
      await fabric.start("ca");
      const during = await signedNode("n-during");
      const revokedDuring = await ca("platformAdmin").revoke({
        target: { case: "serial", value: during.serial },
      });

      const resumed = watch(ids.registry!, held);
      await resumed.until((m) => m.some((x) => x.event.case === "synced"), "the resumed stream to sync");
      expect(cases(resumed.messages)).toEqual(["revoked", "synced"]);
      const replayed = resumed.messages[0]!.event;
      expect(replayed.case === "revoked" && replayed.value.serial).toBe(during.serial);
      expect(replayed.case === "revoked" && replayed.value.version).toBe(revokedDuring.version);
      const synced = resumed.messages[1]!.event;
      expect(synced.case === "synced" && synced.value.version).toBe(revokedDuring.version);
      resumed.stop.abort();
      await resumed.done;

      // A version the CA never had (e.g. its database was replaced) gets a full list, flagged.
      const stale = watch(ids.registry!, revokedDuring.version + 1000n);
      await stale.until((m) => m.some((x) => x.event.case === "synced"), "the relist");
      const relist = stale.messages[0]!.event;
      expect(relist.case).toBe("list");
      expect(relist.case === "list" && relist.value.reset && relist.value.resumeExpired).toBe(true);
      const serials = stale.messages.flatMap((m) =>
        m.event.case === "list" ? m.event.value.entries.map((e) => e.serial) : [],
      );
      expect(serials).toEqual(expect.arrayContaining([before.serial, during.serial]));
      stale.stop.abort();
      await stale.done;
    },
  );

  it(
    "keeps a platform follower (followRevocations) in step across a CA restart",
    { timeout: 90_000 },
    async () => {
      const followed = new RevocationSet();
      const stop = new AbortController();
      let syncs = 0;
      void followRevocations(fabric.client(CaService, "ca", ids.router!), followed, {
        logger: createLogger({ service: "test", level: "silent" }),
        signal: stop.signal,
        onSynced: () => void syncs++,
      });
      await eventually(async () => (syncs > 0 ? true : undefined), "the first sync");
      await fabric.stop("ca");
      await fabric.start("ca");
      const node = await signedNode("n-after-restart");
      await ca("platformAdmin").revoke({ target: { case: "serial", value: node.serial } });
      const facts = inspectCertificate(node.certificatePem);
      const presented = {
        serialHex: facts.serialHex,
        kind: "node",
        id: "n-after-restart",
        notBefore: facts.notBefore,
      };
      // synced again after reconnecting, and holding the revocation made after the restart
      await eventually(
        async () => (syncs >= 2 && followed.isRevoked(presented) ? true : undefined),
        "the follower to resync and see the revocation after the restart",
        // the follower reconnects with exponential backoff while the CA restarts
        40_000,
      );
      stop.abort();
    },
  );
});

/**
 * The CRL's TBSCertList as the publisher built it with @peculiar/asn1-x509 before it was written by hand,
 * from the rows of its query then: the reference the hand-written DER must equal byte for byte.
 */
async function referenceTbsCertList(
  pool: Pool,
  authority: SigningAuthority,
  header: { thisUpdate: Date; nextUpdate: Date; number: number },
): Promise<Buffer> {
  const { rows } = await pool.query<{ serial: string; revoked_at: Date; revocation_reason: number }>(
    `SELECT serial, revoked_at, revocation_reason FROM certificates
      WHERE revoked_at IS NOT NULL AND not_after > now() ORDER BY revoked_at, serial`,
  );
  const tbs = new TBSCertList({
    version: Version.v2,
    signature: authority.signatureAlgorithm,
    issuer: AsnConvert.parse(authority.subjectDer, Name),
    thisUpdate: new Time(header.thisUpdate),
    nextUpdate: new Time(header.nextUpdate),
    crlExtensions: [
      authority.authorityKeyIdentifier,
      new Extension({
        extnID: id_ce_cRLNumber,
        critical: false,
        extnValue: new OctetString(AsnConvert.serialize(new CRLNumber(header.number))),
      }),
    ],
  });
  if (rows.length > 0) {
    tbs.revokedCertificates = rows.map((r) => {
      const hex = r.serial.length % 2 ? `0${r.serial}` : r.serial;
      const bytes = Buffer.from(hex, "hex");
      return new RevokedCertificate({
        userCertificate: new Uint8Array(bytes[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes)
          .buffer,
        revocationDate: new Time(wholeSeconds(r.revoked_at)),
        ...(r.revocation_reason
          ? {
              crlEntryExtensions: [
                new Extension({
                  extnID: id_ce_cRLReasons,
                  critical: false,
                  extnValue: new OctetString(AsnConvert.serialize(new CRLReason(r.revocation_reason))),
                }),
              ],
            }
          : {}),
      });
    });
  }
  return Buffer.from(AsnConvert.serialize(tbs));
}

describe("CRL encoding", () => {
  it("writes the same TBSCertList @peculiar/asn1-x509 did for the same rows, signed, and openssl reads it", async () => {
    const db = await createTestDatabase("cacrl");
    const crlPool = createPool({ url: db.url, schema: "ca" });
    try {
      await migrate({ url: db.url, schema: "ca", dir: caDefinition.migrationsDir });
      const pki = await createTestPki();
      const authority = await SigningAuthority.create(
        pki.intermediatePem,
        createPrivateKey(pki.intermediateKeyPem),
      );
      const publisher = new CrlPublisher(crlPool, authority, {
        refreshMs: 3_600_000,
        debounceMs: 100,
        logger: createLogger({ service: "ca-test", level: "error" }),
      });

      /** Rebuilds, checks the signature and the TBSCertList against the reference; returns the DER. */
      const rebuildAndCompare = async () => {
        await publisher.rebuild();
        const der = servedCrl(publisher);
        const [tbs, , signature] = childrenOf(der, readTlv(der, 0));
        const parsed = AsnConvert.parse(der, CertificateList).tbsCertList;
        const numberExtension = parsed.crlExtensions!.find((e) => e.extnID === id_ce_cRLNumber)!;
        const reference = await referenceTbsCertList(crlPool, authority, {
          thisUpdate: parsed.thisUpdate.getTime(),
          nextUpdate: parsed.nextUpdate!.getTime(),
          number: AsnConvert.parse(numberExtension.extnValue, CRLNumber).value,
        });
        expect(rawOf(der, tbs!).toString("hex")).toBe(reference.toString("hex"));
        const signatureBits = valueOf(der, signature!).subarray(1);
        expect(verify("sha256", rawOf(der, tbs!), createPublicKey(pki.intermediatePem), signatureBits)).toBe(
          true,
        );
        return der;
      };

      // No entries: revokedCertificates is left out.
      const empty = await rebuildAndCompare();
      expect(AsnConvert.parse(empty, CertificateList).tbsCertList.revokedCertificates).toBeUndefined();

      // Serials of every shape the INTEGER encoding cares about (odd digit counts, high bit set, short), all
      // reasons, fractional seconds (truncated), ties on the time, UTCTime's last second and GeneralizedTime.
      const serials = [
        ...Array.from({ length: 200 }, () => randomBytes(16).toString("hex").replace(/^0+/, "")),
        `ff${randomBytes(15).toString("hex")}`,
        `7f${randomBytes(15).toString("hex")}`,
        "abc",
        "1",
        "80",
      ];
      const reasons = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10];
      const times = serials.map((_, i) => new Date(Date.now() - 1_000_000 + Math.floor(i / 3) * 7_919.123));
      times[serials.length - 3] = new Date("2049-12-31T23:59:59.999Z");
      times[serials.length - 2] = new Date("2050-01-01T00:00:00.500Z");
      times[serials.length - 1] = new Date("2061-03-04T05:06:07Z");
      const insert = (
        rows: { serial: string; notAfter: Date; revokedAt: Date | null; reason: number | null }[],
      ) =>
        crlPool.query(
          `INSERT INTO certificates (serial, principal_kind, principal_id, spiffe_id, not_before, not_after,
             fingerprint_sha256, authorization_ref, issued_at, revoked_at, revocation_reason)
           SELECT s, 'node', 'n-' || s, 'spiffe://fabric.test/cluster/c1/node/n-' || s, now() - interval '1 day',
             na, 'fp-' || s, 'test', now() - interval '1 day', ra, r
           FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::int[]) AS t(s, na, ra, r)`,
          [
            rows.map((r) => r.serial),
            rows.map((r) => r.notAfter),
            rows.map((r) => r.revokedAt),
            rows.map((r) => r.reason),
          ],
        );
      const inAMonth = new Date(Date.now() + 30 * 86_400_000);
      await insert(
        serials.map((serial, i) => ({
          serial,
          notAfter: inAMonth,
          revokedAt: times[i]!,
          reason: reasons[i % reasons.length]!,
        })),
      );
      // Neither an expired revoked certificate nor a valid one is listed.
      const expired = "e0e0e0e0e0e0e0e0";
      const valid = "a1a1a1a1a1a1a1a1";
      await insert([
        {
          serial: expired,
          notAfter: new Date(Date.now() - 1_000),
          revokedAt: new Date(Date.now() - 60_000),
          reason: 1,
        },
        { serial: valid, notAfter: inAMonth, revokedAt: null, reason: null },
      ]);

      const der = await rebuildAndCompare();
      const file = join(dir, "encoded-crl.der");
      writeFileSync(file, der);
      const chain = join(dir, "test-pki-chain.pem");
      writeFileSync(chain, pki.intermediatePem + pki.rootPem);
      const text = openssl(["crl", "-inform", "DER", "-in", file, "-CAfile", chain, "-noout", "-text"]);
      expect(text).toMatch(/verify OK/);
      expect(text.match(/Serial Number:/g)).toHaveLength(serials.length);
      expect(text).toContain(
        `Serial Number: ${serials[0]!.toUpperCase().padStart(serials[0]!.length + (serials[0]!.length % 2), "0")}`,
      );
      expect(text).not.toContain("E0E0E0E0E0E0E0E0");
      expect(text).not.toContain("A1A1A1A1A1A1A1A1");
      for (const reason of [
        "Key Compromise",
        "CA Compromise",
        "Superseded",
        "Privilege Withdrawn",
        "AA Compromise",
      ]) {
        expect(text).toContain(reason);
      }
      expect(text.match(/CRL Reason Code/g)).toHaveLength(
        serials.length - Math.ceil(serials.length / reasons.length),
      );
    } finally {
      await crlPool.end();
      await db.drop();
    }
  });
});

/** The DER the publisher serves at /crl. */
function servedCrl(publisher: CrlPublisher): Buffer {
  let body: Buffer | undefined;
  const res = { writeHead: () => res, end: (chunk?: Buffer) => void (body = chunk) };
  publisher.route({ method: "GET" } as never, res as never);
  if (!body) throw new Error("the CRL publisher has no CRL to serve");
  return body;
}
