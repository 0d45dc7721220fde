// Proves a platform server speaks plain gRPC: @grpc/grpc-js with proto-loader, reading the same .proto
// files, makes a unary and a server-streaming call over mTLS.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../src/logger.js";
import { createRpcServer, type RpcServer } from "../src/rpc-server.js";
import { createTestPki } from "../src/testing/pki.js";
import type { TlsCredentials } from "../src/tls-credentials.js";
import { fixtureService } from "./fixtures/test-service.js";

const PROTO_ROOT = fileURLToPath(new URL("../../proto", import.meta.url));

let server: RpcServer;
let node: TlsCredentials;

beforeAll(async () => {
  const pki = await createTestPki("fabric.test");
  node = await pki.issue({ kind: "node", id: "n-1", cluster: "c1" });
  server = await createRpcServer({
    name: "ca",
    trustDomain: "fabric.test",
    credentials: await pki.issue({ kind: "service", id: "ca" }),
    grpcPort: 0,
    httpPort: 0,
    services: [fixtureService()],
    logger: createLogger({ service: "test", level: "silent" }),
  });
  server.setReady(true);
});
afterAll(() => server?.close());

type Callback<T> = (err: grpc.ServiceError | null, value?: T) => void;
interface CaStub extends grpc.Client {
  GetTrustBundle(req: object, cb: Callback<{ trust_domain: string }>): void;
  WatchRevocations(
    req: object,
  ): grpc.ClientReadableStream<{ event: string; revoked?: { serial: string }; synced?: object }>;
}

function caStub(): CaStub {
  const definition = protoLoader.loadSync("fabric/ca/v1/ca.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    fabric: { ca: { v1: { CaService: new (address: string, creds: grpc.ChannelCredentials) => CaStub } } };
  };
  const creds = grpc.credentials.createSsl(
    Buffer.from(node.caBundlePem),
    Buffer.from(node.privateKeyPem),
    Buffer.from(node.certificatePem + node.chainPem.join("")),
  );
  return new loaded.fabric.ca.v1.CaService(`127.0.0.1:${server.grpcPort}`, creds);
}

describe("@grpc/grpc-js interop", () => {
  it("completes a unary call over mTLS", async () => {
    const stub = caStub();
    const res = await new Promise<{ trust_domain: string }>((resolve, reject) =>
      stub.GetTrustBundle({}, (err, value) => (err ? reject(err) : resolve(value!))),
    );
    expect(res.trust_domain).toBe("n-1");
    stub.close();
  });

  it("completes a server-streaming call over mTLS", async () => {
    const stub = caStub();
    const call = stub.WatchRevocations({ resume_from_version: "10" });
    const events: string[] = [];
    await new Promise<void>((resolve, reject) => {
      call.on("data", (msg) => {
        events.push(msg.event === "revoked" ? `revoked ${msg.revoked!.serial}` : msg.event);
        if (msg.event === "synced") {
          call.cancel();
          resolve();
        }
      });
      call.on("error", (err: grpc.ServiceError) =>
        err.code === grpc.status.CANCELLED ? resolve() : reject(err),
      );
    });
    expect(events).toEqual(["revoked s1", "revoked s2", "revoked s3", "synced"]);
    stub.close();
  });

  it("gets a gRPC status for a refused call", async () => {
    const stub = caStub();
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      (stub as unknown as { Revoke(req: object, cb: Callback<unknown>): void }).Revoke({}, (e) =>
        resolve(e!),
      );
    });
    expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    // connect-node percent-encodes grpc-message with encodeURIComponent; grpc-js only applies decodeURI,
    // which leaves reserved characters such as %2F encoded.
    expect(decodeURIComponent(err.details)).toContain("may not call fabric.ca.v1.CaService/Revoke");
    stub.close();
  });
});
