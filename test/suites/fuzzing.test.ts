// Fuzzing with a seeded PRNG (the seed is in each test's title; FABRIC_FUZZ_SEED replays a run,
// FABRIC_FUZZ_SECONDS runs longer):
// - random and mutated bytes sent as the request message of every unary RPC of every service, each as a
//   caller its authorization table admits, so the bytes reach the service's decoding and handlers: no
//   answer may be Internal or Unknown (nor missing), and every process stays up and keeps serving;
// - the CA's and the platform's CSR verifiers and enrollment's join-token parser, each in a watched
//   worker: nothing but their InvalidArgument refusal may come out, and no input may hang them.
import { join } from "node:path";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { type Rule, type ServiceName, type TlsCredentials } from "@fabric/platform";
import { spawnTs } from "@fabric/platform/testing";
import { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { RouterService } from "@fabric/proto/fabric/router/v1/router_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CA_POLICY } from "../../services/ca/src/policy.js";
import { policy as ENROLLMENT_POLICY } from "../../services/enrollment/src/policy.js";
import { REGISTRY_POLICY } from "../../services/registry/src/policy.js";
import { ROUTER_POLICY } from "../../services/router/src/router-rpc.js";
import { startFabric, type Fabric } from "../harness/fabric.js";
import { mutateBytes, randomMessageBytes } from "./support/mutations.js";
import type { ParserTarget } from "./support/parser-fuzz.js";
import { Prng, fuzzSeed } from "./support/prng.js";
import { RawGrpcClient } from "./support/raw-grpc.js";

const SECONDS = Number(process.env.FABRIC_FUZZ_SECONDS ?? 10);
const SEED = fuzzSeed();
const IN_FLIGHT = 8;
const CALL_TIMEOUT_MS = 10_000;
// Answers that mean the service broke rather than refused: a fault, or no answer at all.
const BROKEN = new Set<number | undefined>([Code.Internal, Code.Unknown, Code.DataLoss, undefined]);

const TARGETS: { name: ServiceName; service: DescService; policy: Record<string, Rule> }[] = [
  { name: "ca", service: CaService, policy: CA_POLICY },
  { name: "enrollment", service: EnrollmentService, policy: ENROLLMENT_POLICY },
  { name: "registry", service: RegistryService, policy: REGISTRY_POLICY },
  { name: "router", service: RouterService, policy: ROUTER_POLICY },
];

let fabric: Fabric;

beforeAll(async () => {
  fabric = await startFabric({
    services: ["ca", "registry", "enrollment", "router"],
    env: {
      enrollment: {
        // Let the bytes reach decoding and validation rather than the abuse limits.
        FABRIC_ADDRESS_RATE_PER_SECOND: "100000",
        FABRIC_ADDRESS_BURST: "100000",
        FABRIC_CREDENTIAL_RATE_PER_SECOND: "100000",
        FABRIC_CREDENTIAL_BURST: "100000",
      },
    },
  });
}, 180_000);

afterAll(async () => {
  await fabric?.close();
});

/** An identity the method's rule admits: anonymous, a platform-admin, a listed service, or a node. */
async function admittedCaller(rule: Rule): Promise<TlsCredentials | Pick<TlsCredentials, "caBundlePem">> {
  if (rule.anonymous) return { caBundlePem: fabric.admin.caBundlePem };
  if (rule.adminRoles?.includes("platform-admin")) return fabric.admin;
  if (rule.services?.[0]) return fabric.serviceIdentity(rule.services[0]);
  if (rule.kinds?.includes("node")) return fabric.issue({ kind: "node", id: "n-fuzz", cluster: "c1" });
  return fabric.issue({ kind: "user", id: "u-fuzz" });
}

/** One kind of breakage: the status and message shape, where it showed, and one input that shows it. */
interface Finding {
  answer: string;
  rpcs: string[];
  example: { rpc: string; payload: string };
}

describe("fuzzing", () => {
  it(
    `protobuf requests to every unary RPC: never Internal, every process stays up (seed ${SEED})`,
    { timeout: 60_000 + SECONDS * 2_000 },
    async () => {
      const prng = new Prng(SEED);
      const methods: { rpc: string; method: DescMethod; client: RawGrpcClient }[] = [];
      for (const t of TARGETS) {
        for (const method of t.service.methods.filter((m) => m.methodKind === "unary")) {
          const credentials = await admittedCaller(t.policy[method.localName]!);
          methods.push({
            rpc: `/${t.service.typeName}/${method.name}`,
            method,
            client: new RawGrpcClient(fabric.urls[t.name]!.grpc, credentials),
          });
        }
      }
      // Distinct breakages by status and message shape, with the methods that showed each.
      const findings = new Map<string, Finding>();
      const answers = new Map<string, number>();
      const end = Date.now() + SECONDS * 1_000;
      const worker = async () => {
        while (Date.now() < end) {
          const { rpc, method, client } = prng.pick(methods);
          const valid = () => randomMessageBytes(method.input, prng);
          const payload = prng.chance(0.2)
            ? prng.bytes(prng.int(512))
            : prng.chance(0.5)
              ? valid()
              : mutateBytes(valid(), prng, valid());
          const answer = await client.call(rpc, payload, CALL_TIMEOUT_MS);
          const status =
            answer.status === undefined ? "none" : answer.status === 0 ? "OK" : Code[answer.status]!;
          answers.set(status, (answers.get(status) ?? 0) + 1);
          if (BROKEN.has(answer.status)) {
            const shape = `${status}: ${answer.message.replace(/\d+/g, "N").slice(0, 100)}`;
            const finding = findings.get(shape) ?? {
              answer: shape,
              rpcs: [],
              example: { rpc, payload: Buffer.from(payload).toString("base64") },
            };
            if (!finding.rpcs.includes(rpc)) finding.rpcs.push(rpc);
            findings.set(shape, finding);
          }
        }
      };
      await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
      for (const m of methods) m.client.close();

      const total = [...answers.values()].reduce((a, b) => a + b, 0);
      expect(
        [...findings.values()],
        `answers ${JSON.stringify(Object.fromEntries(answers))} (seed ${SEED})`,
      ).toEqual([]);
      expect(answers.get("InvalidArgument") ?? 0, "malformed requests are refused as such").toBeGreaterThan(
        0,
      );
      expect(total).toBeGreaterThan(methods.length);

      // Every process is still up, and still serves a well-formed call.
      for (const t of TARGETS) {
        expect([t.name, (await fetch(`${fabric.urls[t.name]!.http}/healthz`)).status]).toEqual([t.name, 200]);
      }
      expect((await fabric.client(CaService, "ca").getTrustBundle({})).trustDomain).toBe(fabric.trustDomain);
    },
  );

  describe.concurrent("parsers of untrusted input", () => {
    const targets: [ParserTarget, string][] = [
      ["ca-csr", "the CA's CSR verifier"],
      ["platform-csr", "the platform's CSR verifier"],
      ["join-token", "enrollment's join-token parser"],
    ];
    for (const [target, name] of targets) {
      it(
        `${name}: only InvalidArgument, no crash, no hang (seed ${SEED})`,
        { timeout: 60_000 + SECONDS * 2_000 },
        async () => {
          const child = await spawnTs(join(import.meta.dirname, "support/parser-fuzz.ts"), {
            args: [target, String(SECONDS), String(SEED)],
          });
          const code = await child.exited;
          const result = JSON.parse(child.output().trim().split("\n").at(-1) ?? "{}") as Record<
            string,
            unknown
          >;
          expect({ code, ...result }, `seed ${SEED}`).toMatchObject({ code: 0, inputs: expect.any(Number) });
          expect(result.inputs as number).toBeGreaterThan(0);
        },
      );
    }
  });
});
