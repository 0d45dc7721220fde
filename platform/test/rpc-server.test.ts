import http2 from "node:http2";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "@fabric/proto/grpc/health/v1/health_pb.js";
import { ServerReflection } from "@fabric/proto/grpc/reflection/v1/reflection_pb.js";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { fromBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../src/logger.js";
import { inspectCertificate } from "../src/pki/certificates.js";
import { createRpcClient } from "../src/rpc-client.js";
import { createRpcServer, type RpcServer } from "../src/rpc-server.js";
import type { TlsCredentials } from "../src/tls-credentials.js";
import { createTestPki, type TestPki } from "../src/testing/pki.js";
import { fixtureService } from "./fixtures/test-service.js";

const logger = createLogger({ service: "test", level: "silent" });
let pki: TestPki;
let foreign: TestPki;
let server: RpcServer;
let optional: RpcServer;
const ids: Record<string, TlsCredentials> = {};

beforeAll(async () => {
  pki = await createTestPki("fabric.test");
  foreign = await createTestPki("fabric.test");
  ids.node = await pki.issue({ kind: "node", id: "n-1", cluster: "c1" });
  ids.user = await pki.issue({ kind: "user", id: "dev01" });
  ids.enrollment = await pki.issue({ kind: "service", id: "enrollment" });
  ids.registry = await pki.issue({ kind: "service", id: "registry" });
  ids.platformAdmin = await pki.issue({ kind: "admin", id: "alice", grant: "platform-admin" });
  ids.orgAdmin = await pki.issue({ kind: "admin", id: "olga", grant: "org-admin", organization: "o1" });
  ids.foreignNode = await foreign.issue({ kind: "node", id: "n-1", cluster: "c1" });
  const serverCreds = await pki.issue({ kind: "service", id: "ca" });
  for (const mode of ["required", "optional"] as const) {
    const s = await createRpcServer({
      name: "ca",
      trustDomain: "fabric.test",
      credentials: serverCreds,
      clientCertificates: mode,
      grpcPort: 0,
      httpPort: 0,
      services: [fixtureService()],
      logger,
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

const caClient = (creds: TlsCredentials | Pick<TlsCredentials, "caBundlePem">, url = server.grpcUrl) =>
  createRpcClient(CaService, { url, credentials: creds, retries: 0, timeoutMs: 5_000 });

/** The error a call that must fail failed with. */
async function refusal(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call succeeded but should have been refused");
}

const TRANSPORT_FAILURES = [Code.Unavailable, Code.Internal, Code.Canceled, Code.Unknown];

async function codeOf(call: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await call;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

describe("mTLS admission (required mode)", () => {
  it("refuses a caller with no client certificate at the handshake", async () => {
    // TLS 1.3 clients learn of the refusal as a reset connection; no RPC status is ever sent.
    expect(TRANSPORT_FAILURES).toContain(
      await codeOf(caClient({ caBundlePem: pki.rootPem }).getTrustBundle({})),
    );
  });

  it("refuses a certificate from a foreign CA", async () => {
    const creds = { ...ids.foreignNode!, caBundlePem: pki.rootPem };
    expect(TRANSPORT_FAILURES).toContain(await codeOf(caClient(creds).getTrustBundle({})));
  });

  it("lets allowed kinds through and tells the handler who called", async () => {
    expect((await caClient(ids.node!).getTrustBundle({})).trustDomain).toBe("n-1");
    expect((await caClient(ids.registry!).getTrustBundle({})).trustDomain).toBe("registry");
    expect((await caClient(ids.platformAdmin!).getTrustBundle({})).trustDomain).toBe("alice");
  });

  it("refuses disallowed kinds, services and admin roles with PermissionDenied", async () => {
    for (const who of ["user", "enrollment", "orgAdmin"]) {
      const err = await refusal(caClient(ids[who]!).getTrustBundle({}));
      expect(err.code, who).toBe(Code.PermissionDenied);
      expect(err.rawMessage).toContain("fabric.ca.v1.CaService/GetTrustBundle");
    }
  });

  it("denies by default: a method whose rule names nobody refuses everyone", async () => {
    for (const who of Object.keys(ids).filter((k) => k !== "foreignNode")) {
      expect(await codeOf(caClient(ids[who]!).revoke({})), who).toBe(Code.PermissionDenied);
    }
  });
});

describe("anonymous RPCs (optional mode)", () => {
  it("serves an RPC marked anonymous without a certificate", async () => {
    const res = await caClient({ caBundlePem: pki.rootPem }, optional.grpcUrl).sign({});
    expect(res.spiffeId).toBe("anonymous");
  });

  it("refuses every other RPC without a verified certificate with Unauthenticated", async () => {
    const err = await refusal(caClient({ caBundlePem: pki.rootPem }, optional.grpcUrl).getTrustBundle({}));
    expect(err.code).toBe(Code.Unauthenticated);
    expect(err.rawMessage).toMatch(/needs a client certificate/);
    const foreignCreds = { ...ids.foreignNode!, caBundlePem: pki.rootPem };
    const foreignErr = await refusal(caClient(foreignCreds, optional.grpcUrl).getTrustBundle({}));
    expect(foreignErr.code).toBe(Code.Unauthenticated);
    expect(foreignErr.rawMessage).toMatch(/not accepted/);
  });

  it("still authorizes callers that do present a certificate", async () => {
    expect((await caClient(ids.node!, optional.grpcUrl).getTrustBundle({})).trustDomain).toBe("n-1");
    expect(await codeOf(caClient(ids.user!, optional.grpcUrl).getTrustBundle({}))).toBe(
      Code.PermissionDenied,
    );
  });
});

describe("health, reflection and the plain port", () => {
  it("answers grpc health checks", async () => {
    const health = createRpcClient(Health, { url: server.grpcUrl, credentials: ids.node! });
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect((await health.check({ service: "fabric.ca.v1.CaService" })).status).toBe(
      HealthCheckResponse_ServingStatus.SERVING,
    );
    expect(await codeOf(health.check({ service: "nope.Service" }))).toBe(Code.NotFound);
  });

  it("answers server reflection: services and files by symbol", async () => {
    const reflection = createRpcClient(ServerReflection, { url: server.grpcUrl, credentials: ids.node! });
    async function* requests() {
      yield { messageRequest: { case: "listServices" as const, value: "" } };
      yield { messageRequest: { case: "fileContainingSymbol" as const, value: "fabric.ca.v1.CaService" } };
    }
    const answers = [];
    for await (const res of reflection.serverReflectionInfo(requests())) answers.push(res);
    const list = answers[0]!.messageResponse;
    expect(list.case).toBe("listServicesResponse");
    const names = list.case === "listServicesResponse" ? list.value.service.map((s) => s.name) : [];
    expect(names).toEqual(expect.arrayContaining(["fabric.ca.v1.CaService", "grpc.health.v1.Health"]));
    const files = answers[1]!.messageResponse;
    expect(files.case).toBe("fileDescriptorResponse");
    if (files.case === "fileDescriptorResponse") {
      const names = files.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b).name);
      expect(names[0]).toBe("fabric/ca/v1/ca.proto");
      expect(names).toContain("google/protobuf/timestamp.proto");
    }
  });

  it("serves /healthz, /readyz and /metrics with per-method RPC counts", async () => {
    expect((await fetch(`${server.httpUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${server.httpUrl}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${server.httpUrl}/metrics`)).text();
    expect(metrics).toMatch(
      /fabric_rpc_requests_total\{method="fabric.ca.v1.CaService\/GetTrustBundle",code="OK"/,
    );
    expect(metrics).toMatch(
      /fabric_rpc_requests_total\{method="fabric.ca.v1.CaService\/Revoke",code="PermissionDenied"/,
    );
  });

  it("serves gRPC-web and Connect on the same port", async () => {
    const { createConnectTransport, createGrpcWebTransport } = await import("@connectrpc/connect-node");
    const node = ids.node!;
    const nodeOptions = {
      key: node.privateKeyPem,
      cert: node.certificatePem + node.chainPem.join(""),
      ca: node.caBundlePem,
    };
    for (const transport of [
      createConnectTransport({ baseUrl: server.grpcUrl, httpVersion: "2", nodeOptions }),
      createGrpcWebTransport({ baseUrl: server.grpcUrl, httpVersion: "1.1", nodeOptions }),
      createGrpcTransport({ baseUrl: server.grpcUrl, nodeOptions }),
    ]) {
      expect((await createClient(CaService, transport).getTrustBundle({})).trustDomain).toBe("n-1");
    }
  });
});

describe("request messages that do not decode", () => {
  // A varint field whose varint never ends: no protobuf decoder accepts it.
  const GARBAGE = Buffer.from("08ffffffffffffffffffffbb", "hex");
  const enveloped = (message: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, 0, message.length]), message]);

  /** POSTs raw bytes over HTTP/2 as the node and collects the status, headers, trailers and body. */
  function post(path: string, contentType: string, body: Buffer) {
    const node = ids.node!;
    const session = http2.connect(server.grpcUrl, {
      key: node.privateKeyPem,
      cert: node.certificatePem + node.chainPem.join(""),
      ca: node.caBundlePem,
      checkServerIdentity: () => undefined,
    });
    return new Promise<{ status: number; grpcStatus: string | undefined; body: string }>(
      (resolve, reject) => {
        const req = session.request({
          ":method": "POST",
          ":path": path,
          "content-type": contentType,
          te: "trailers",
        });
        let status = 0;
        let grpcStatus: string | undefined;
        const chunks: Buffer[] = [];
        req.on("response", (headers) => {
          status = Number(headers[":status"]);
          grpcStatus = headers["grpc-status"] as string | undefined; // trailers-only replies
        });
        req.on("trailers", (trailers) => (grpcStatus = trailers["grpc-status"] as string | undefined));
        req.on("data", (chunk: Buffer) => chunks.push(chunk));
        req.on("end", () => {
          session.close();
          resolve({ status, grpcStatus, body: Buffer.concat(chunks).toString() });
        });
        req.on("error", reject);
        req.end(body);
      },
    );
  }

  it("answers InvalidArgument over gRPC, unary and server-streaming", async () => {
    for (const method of ["GetTrustBundle", "WatchRevocations"]) {
      const answer = await post(`/fabric.ca.v1.CaService/${method}`, "application/grpc", enveloped(GARBAGE));
      expect([method, answer.grpcStatus]).toEqual([method, String(Code.InvalidArgument)]);
    }
  });

  it("answers invalid_argument over Connect, and still serves a message that decodes", async () => {
    const bad = await post("/fabric.ca.v1.CaService/GetTrustBundle", "application/proto", GARBAGE);
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body)).toMatchObject({
      code: "invalid_argument",
      message: expect.stringMatching(/not valid protobuf/),
    });
    const good = await post(
      "/fabric.ca.v1.CaService/GetTrustBundle",
      "application/grpc",
      enveloped(Buffer.alloc(0)),
    );
    expect([good.status, good.grpcStatus]).toEqual([200, "0"]);
  });
});

describe("revocation", () => {
  it("cuts an open stream of a revoked identity within a second and refuses its next calls", async () => {
    const victim = await pki.issue({ kind: "node", id: "n-9", cluster: "c1" });
    const serial = inspectCertificate(victim.certificatePem).serialHex;
    const client = caClient(victim);
    const seen: string[] = [];
    let synced!: () => void;
    const gotSynced = new Promise<void>((resolve) => (synced = resolve));
    const stream = (async () => {
      for await (const res of client.watchRevocations({})) {
        seen.push(res.event.case ?? "");
        if (res.event.case === "synced") synced();
      }
    })();
    await gotSynced;
    const revokedAt = Date.now();
    server.revocations.add({ serialHex: serial, notAfter: new Date(Date.now() + 86_400_000) });
    const err = await stream.then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(Date.now() - revokedAt).toBeLessThan(1_000);
    expect(err?.code).toBe(Code.Unauthenticated);
    expect(err?.rawMessage).toMatch(/revoked/);
    expect(seen).toEqual(["revoked", "revoked", "revoked", "synced"]);
    expect(await codeOf(client.getTrustBundle({}))).toBe(Code.Unauthenticated);
    // other identities are unaffected
    expect((await caClient(ids.node!).getTrustBundle({})).trustDomain).toBe("n-1");
  });
});

describe("shutdown", () => {
  it("closes promptly with a stream still open, ending it", async () => {
    const creds = await pki.issue({ kind: "service", id: "ca" });
    const s = await createRpcServer({
      name: "ca",
      trustDomain: "fabric.test",
      credentials: creds,
      grpcPort: 0,
      httpPort: 0,
      services: [fixtureService()],
      logger,
    });
    const client = caClient(ids.node!, s.grpcUrl);
    let synced!: () => void;
    const gotSynced = new Promise<void>((r) => (synced = r));
    const stream = (async () => {
      for await (const res of client.watchRevocations({})) if (res.event.case === "synced") synced();
    })().catch(() => undefined);
    await gotSynced;
    const started = Date.now();
    await s.close();
    await stream;
    expect(Date.now() - started).toBeLessThan(3_000);
  });
});
