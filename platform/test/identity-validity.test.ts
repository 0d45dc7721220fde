import { setImmediate as tick } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { ServerReflection } from "@fabric/proto/grpc/reflection/v1/reflection_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { STREAM_RECHECK_MS } from "../src/identity-validity.js";
import { createLogger } from "../src/logger.js";
import { inspectCertificate } from "../src/pki/certificates.js";
import { REVOCATION_RETENTION_MS, RevocationSet } from "../src/revocation.js";
import { createRpcClient } from "../src/rpc-client.js";
import { createRpcServer, type RpcServer } from "../src/rpc-server.js";
import { FakeClock } from "../src/testing/clock.js";
import { createTestPki, type TestPki } from "../src/testing/pki.js";
import type { TlsCredentials } from "../src/tls-credentials.js";
import { Pushable } from "./fixtures/pushable.js";
import { fixtureService } from "./fixtures/test-service.js";

const logger = createLogger({ service: "test", level: "silent" });
const MINUTE = 60_000;
const YEAR = 365 * 86_400_000;
let pki: TestPki;
let clock: FakeClock;
let server: RpcServer;
let optional: RpcServer;

beforeAll(async () => {
  pki = await createTestPki("fabric.test");
  // The servers judge validity by this clock; TLS handshakes still use the real one, so certificates
  // are valid in real time and expire when the test moves this clock.
  clock = new FakeClock();
  const credentials = await pki.issue({ kind: "service", id: "ca" });
  for (const mode of ["required", "optional"] as const) {
    const s = await createRpcServer({
      name: "ca",
      trustDomain: "fabric.test",
      credentials,
      clientCertificates: mode,
      grpcPort: 0,
      httpPort: 0,
      services: [fixtureService()],
      logger,
      clock,
      // Idle connections are closed by this same clock; these tests keep theirs open while time passes.
      limits: { idleTimeoutMs: YEAR, anonymousIdleTimeoutMs: YEAR },
    });
    s.setReady(true);
    if (mode === "required") server = s;
    else optional = s;
  }
});

afterAll(async () => {
  await server?.close();
  await optional?.close();
});

/** A node identity valid in real time, expiring `lifetimeMs` after the fake clock's now. */
async function node(id: string, lifetimeMs = 10 * MINUTE) {
  const credentials = await pki.issue(
    { kind: "node", id, cluster: "c1" },
    { notAfter: new Date(clock.now() + lifetimeMs) },
  );
  const facts = inspectCertificate(credentials.certificatePem);
  return { credentials, serialHex: facts.serialHex, notAfter: facts.notAfter, notBefore: facts.notBefore };
}

const caClient = (credentials: TlsCredentials, url = server.grpcUrl) =>
  createRpcClient(CaService, { url, credentials, retries: 0, timeoutMs: 5_000 });

async function refusal(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call succeeded but should have been refused");
}

/** Opens the fixture's WatchRevocations (a Watch-like stream that stays open) and waits until it is live. */
async function openWatch(client: ReturnType<typeof caClient>) {
  let synced!: () => void;
  const live = new Promise<void>((resolve) => (synced = resolve));
  let ended: ConnectError | "ended" | undefined;
  const done = (async () => {
    for await (const res of client.watchRevocations({})) if (res.event.case === "synced") synced();
  })().then(
    () => (ended = "ended"),
    (err: unknown) => (ended = ConnectError.from(err)),
  );
  await live;
  return { done, ended: () => ended };
}

describe("identity validity on an open connection", () => {
  it("refuses a unary call once the certificate has expired, naming it and what to do", async () => {
    const id = await node("n-unary");
    const client = caClient(id.credentials);
    expect((await client.getTrustBundle({})).trustDomain).toBe("n-unary");
    const connections = server.listenerStats().grpc.connections;

    clock.advanceTo(id.notAfter.getTime() + 1_000);
    const err = await refusal(client.getTrustBundle({}));
    expect(err.code).toBe(Code.Unauthenticated);
    expect(err.rawMessage).toContain(id.serialHex);
    expect(err.rawMessage).toContain(`expired at ${id.notAfter.toISOString()}`);
    expect(err.rawMessage).toMatch(/renew or re-enroll/);
    // the same connection: TLS never looked at the certificate again
    expect(server.listenerStats().grpc.connections).toBe(connections);
  });

  it("cuts a Watch-like stream at the first instant past notAfter", async () => {
    const id = await node("n-watch");
    const client = caClient(id.credentials);
    const watch = await openWatch(client);

    // notAfter itself is still inside the validity period (RFC 5280: inclusive)
    clock.advanceTo(id.notAfter);
    expect((await client.getTrustBundle({})).trustDomain).toBe("n-watch");
    expect(watch.ended()).toBeUndefined();

    clock.advance(1);
    await watch.done;
    const err = watch.ended();
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.Unauthenticated);
    expect((err as ConnectError).rawMessage).toMatch(/expired at .*renew or re-enroll/);
  });

  it("cuts a stream within the re-check period when the wall clock steps past notAfter", async () => {
    const id = await node("n-step");
    const watch = await openWatch(caClient(id.credentials));
    // An NTP step: wall time moves, the timer at notAfter (counting elapsed time) does not fire.
    clock.jump(id.notAfter.getTime() + MINUTE - clock.now());
    await tick();
    expect(watch.ended()).toBeUndefined();

    clock.advance(STREAM_RECHECK_MS);
    await watch.done;
    expect((watch.ended() as ConnectError).code).toBe(Code.Unauthenticated);
    // the fake clock's wall time is far ahead now; later tests issue against it
  });

  it("refuses the next request message of a bidi stream once the certificate has expired", async () => {
    const id = await node("n-bidi");
    const reflection = createRpcClient(ServerReflection, {
      url: server.grpcUrl,
      credentials: id.credentials,
      retries: 0,
    });
    const requests = new Pushable<{ messageRequest: { case: "listServices"; value: string } }>();
    const answers = reflection.serverReflectionInfo(requests)[Symbol.asyncIterator]();
    requests.push({ messageRequest: { case: "listServices", value: "" } });
    expect((await answers.next()).done).toBe(false);

    // Step the wall clock alone, so neither the notAfter timer nor the periodic re-check fires: only
    // the check of the arriving message can refuse it.
    clock.jump(id.notAfter.getTime() + 1_000 - clock.now());
    requests.push({ messageRequest: { case: "listServices", value: "" } });
    const err = await refusal(answers.next());
    expect(err.code).toBe(Code.Unauthenticated);
    expect(err.rawMessage).toContain(id.serialHex);
    expect(err.rawMessage).toMatch(/expired/);
  });

  it("refuses a certificate that is not valid yet by this server's clock", async () => {
    const credentials = await pki.issue(
      { kind: "node", id: "n-early", cluster: "c1" },
      { notBefore: new Date(Date.now() - MINUTE), notAfter: new Date(clock.now() + 10 * MINUTE) },
    );
    const notBefore = inspectCertificate(credentials.certificatePem).notBefore;
    const behind = new FakeClock(notBefore.getTime() - MINUTE);
    const s = await createRpcServer({
      name: "ca",
      trustDomain: "fabric.test",
      credentials: await pki.issue({ kind: "service", id: "ca" }),
      grpcPort: 0,
      httpPort: 0,
      services: [fixtureService()],
      logger,
      clock: behind,
    });
    try {
      const err = await refusal(caClient(credentials, s.grpcUrl).getTrustBundle({}));
      expect(err.code).toBe(Code.Unauthenticated);
      expect(err.rawMessage).toMatch(/not valid before/);
    } finally {
      await s.close();
    }
  });

  it("hands an anonymous RPC no principal when the certificate presented is no longer valid", async () => {
    const id = await node("n-anon");
    const client = caClient(id.credentials, optional.grpcUrl);
    // Sign is anonymous in the fixture and answers with the caller's SPIFFE ID, or "anonymous".
    expect((await client.sign({})).spiffeId).toMatch(/node\/n-anon$/);
    clock.advanceTo(id.notAfter.getTime() + 1_000);
    expect((await client.sign({})).spiffeId).toBe("anonymous");
  });
});

describe("revocation outlives expiry", () => {
  it("keeps refusing a revoked serial on an open connection after its notAfter has passed", async () => {
    const id = await node("n-revoked");
    const client = caClient(id.credentials);
    expect((await client.getTrustBundle({})).trustDomain).toBe("n-revoked");
    server.revocations.add({ serialHex: id.serialHex, notAfter: id.notAfter });
    expect((await refusal(client.getTrustBundle({}))).rawMessage).toMatch(/revoked/);

    // The certificate expires and the set is pruned (as the revocation feed does every minute).
    clock.advanceTo(id.notAfter.getTime() + 10 * MINUTE);
    server.revocations.prune(new Date(clock.now()));
    const presented = { serialHex: id.serialHex, kind: "node", id: "n-revoked", notBefore: id.notBefore };
    expect(server.revocations.isRevoked(presented)).toBe(true);
    expect((await refusal(client.getTrustBundle({}))).code).toBe(Code.Unauthenticated);
  });

  it("drops an entry only once its retention past notAfter has run out", () => {
    const set = new RevocationSet();
    const notAfter = new Date("2030-01-01T00:00:00Z");
    const presented = {
      serialHex: "ab12",
      kind: "node",
      id: "n",
      notBefore: new Date("2029-01-01T00:00:00Z"),
    };
    set.add({ serialHex: "AB12", notAfter });
    set.add({ principal: "admin/eve", revokedAt: new Date("2029-06-01T00:00:00Z"), notAfter });
    const eve = { serialHex: "cd34", kind: "admin", id: "eve", notBefore: new Date("2029-05-01T00:00:00Z") };

    set.prune(new Date(notAfter.getTime() + REVOCATION_RETENTION_MS));
    expect([set.isRevoked(presented), set.isRevoked(eve)]).toEqual([true, true]);
    set.prune(new Date(notAfter.getTime() + REVOCATION_RETENTION_MS + 1));
    expect([set.isRevoked(presented), set.isRevoked(eve), set.size]).toEqual([false, false, 0]);
  });
});
