// A trace started in one process continues in a second: process A's handler calls process B, both export
// spans to one JSON-lines file, and B's server span must be a child (same trace) of A's client span.
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { afterAll, describe, expect, it } from "vitest";
import { createRpcClient } from "../src/rpc-client.js";
import { createTestPki } from "../src/testing/pki.js";
import { freePort, spawnTs, type ChildService } from "../src/testing/processes.js";

const SERVER = fileURLToPath(new URL("./fixtures/server-process.ts", import.meta.url));
const children: ChildService[] = [];
afterAll(async () => {
  await Promise.all(children.map((c) => c.stop()));
});

interface SpanLine {
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  kind: string;
  service: string;
}

describe("tracing across processes", () => {
  it("continues a trace from one service process into the next", async () => {
    const pki = await createTestPki("fabric.test");
    const dir = mkdtempSync(join(tmpdir(), "fabric-trace-"));
    const traceFile = join(dir, "spans.jsonl");
    writeFileSync(
      join(dir, "registry.json"),
      JSON.stringify(await pki.issue({ kind: "service", id: "registry" })),
    );
    writeFileSync(
      join(dir, "router.json"),
      JSON.stringify(await pki.issue({ kind: "service", id: "router" })),
    );
    const [bGrpc, bHttp, aGrpc, aHttp] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    const common = { FABRIC_TRUST_DOMAIN: "fabric.test", FABRIC_TRACE_FILE: traceFile };
    children.push(
      await spawnTs(SERVER, {
        env: {
          ...common,
          FABRIC_NAME: "b-registry",
          FABRIC_CREDENTIALS_FILE: join(dir, "registry.json"),
          FABRIC_GRPC_PORT: String(bGrpc),
          FABRIC_HTTP_PORT: String(bHttp),
        },
        readyUrl: `http://127.0.0.1:${bHttp}/readyz`,
      }),
    );
    children.push(
      await spawnTs(SERVER, {
        env: {
          ...common,
          FABRIC_NAME: "a-router",
          FABRIC_CREDENTIALS_FILE: join(dir, "router.json"),
          FABRIC_GRPC_PORT: String(aGrpc),
          FABRIC_HTTP_PORT: String(aHttp),
          FABRIC_DOWNSTREAM_URL: `https://127.0.0.1:${bGrpc}`,
          FABRIC_DOWNSTREAM_ID: "spiffe://fabric.test/service/registry",
        },
        readyUrl: `http://127.0.0.1:${aHttp}/readyz`,
      }),
    );
    const node = await pki.issue({ kind: "node", id: "n-1", cluster: "c1" });
    const client = createRpcClient(CaService, { url: `https://127.0.0.1:${aGrpc}`, credentials: node });
    expect((await client.getTrustBundle({})).trustDomain).toBe("n-1 via router");

    await Promise.all(children.map((c) => c.stop())); // flushes the span processors
    const spans = readFileSync(traceFile, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as SpanLine);
    const aServer = spans.find((s) => s.service === "a-router" && s.kind === "SERVER");
    const aClient = spans.find((s) => s.service === "a-router" && s.kind === "CLIENT");
    const bServer = spans.find((s) => s.service === "b-registry" && s.kind === "SERVER");
    expect(aServer && aClient && bServer, JSON.stringify(spans)).toBeTruthy();
    expect(aClient!.traceId).toBe(aServer!.traceId);
    expect(aClient!.parentSpanId).toBe(aServer!.spanId);
    expect(bServer!.traceId).toBe(aServer!.traceId);
    expect(bServer!.parentSpanId).toBe(aClient!.spanId);
    expect(bServer!.name).toBe("fabric.ca.v1.CaService/GetTrustBundle");
  });

  it("stops a process with a bad setting, naming it", async () => {
    const child = await spawnTs(SERVER, {
      env: {
        FABRIC_NAME: "x",
        FABRIC_TRUST_DOMAIN: "t",
        FABRIC_CREDENTIALS_FILE: "/nonexistent",
        FABRIC_GRPC_PORT: "http",
      },
    });
    expect(await child.exited).toBe(78);
    expect(child.output()).toMatch(/FABRIC_GRPC_PORT: .*\(got "http"\)/);
  });
});
