// Random and mutated bytes as the request message of every unary RPC of every service, each sent as a
// caller the service's authorization table admits, so the bytes reach decoding and the handlers.
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type { Rule, ServiceName, TlsCredentials } from "@fabric/platform";
import { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { RouterService } from "@fabric/proto/fabric/router/v1/router_pb.js";
import { CA_POLICY } from "../../../services/ca/src/policy.js";
import { policy as ENROLLMENT_POLICY } from "../../../services/enrollment/src/policy.js";
import { REGISTRY_POLICY } from "../../../services/registry/src/policy.js";
import { ROUTER_POLICY } from "../../../services/router/src/router-rpc.js";
import type { Fabric } from "../../harness/fabric.js";
import { mutateBytes, randomMessageBytes } from "./mutations.js";
import { Prng } from "./prng.js";
import { RawGrpcClient } from "./raw-grpc.js";

/** Each service with its authorization table (services/<name>/src). */
export const SERVICES: { name: ServiceName; service: DescService; policy: Record<string, Rule> }[] = [
  { name: "ca", service: CaService, policy: CA_POLICY },
  { name: "enrollment", service: EnrollmentService, policy: ENROLLMENT_POLICY },
  { name: "registry", service: RegistryService, policy: REGISTRY_POLICY },
  { name: "router", service: RouterService, policy: ROUTER_POLICY },
];

const CALL_TIMEOUT_MS = 10_000;
// Answers that mean the service broke rather than refused: a fault, or no answer at all.
const BROKEN = new Set<number | undefined>([Code.Internal, Code.Unknown, Code.DataLoss, undefined]);

/** One kind of breakage: the status and message shape, where it showed, and one input that shows it. */
export interface Finding {
  answer: string;
  rpcs: string[];
  example: { rpc: string; payload: string };
}

export interface GrpcFuzzResult {
  /** Answers by status name ("OK", "InvalidArgument", ..., "none" for no status). */
  answers: Record<string, number>;
  findings: Finding[];
  calls: number;
  seconds: number;
  methods: number;
}

/** An identity the method's rule admits: anonymous, a platform-admin, a listed service, or a node. */
async function admittedCaller(
  fabric: Fabric,
  rule: Rule,
): Promise<TlsCredentials | Pick<TlsCredentials, "caBundlePem">> {
  if (rule.anonymous) return { caBundlePem: fabric.admin.caBundlePem };
  if (rule.adminRoles?.includes("platform-admin")) return fabric.admin;
  if (rule.services?.[0]) return fabric.serviceIdentity(rule.services[0]);
  if (rule.kinds?.includes("node")) return fabric.issue({ kind: "node", id: "n-fuzz", cluster: "c1" });
  return fabric.issue({ kind: "user", id: "u-fuzz" });
}

export async function fuzzGrpc(
  fabric: Fabric,
  options: { seconds: number; seed: number; inFlight: number },
): Promise<GrpcFuzzResult> {
  const prng = new Prng(options.seed);
  const methods: { rpc: string; method: DescMethod; client: RawGrpcClient }[] = [];
  for (const t of SERVICES) {
    for (const method of t.service.methods.filter((m) => m.methodKind === "unary")) {
      methods.push({
        rpc: `/${t.service.typeName}/${method.name}`,
        method,
        client: new RawGrpcClient(
          fabric.urls[t.name]!.grpc,
          await admittedCaller(fabric, t.policy[method.localName]!),
        ),
      });
    }
  }
  // Distinct breakages by status and message shape, with the methods that showed each.
  const findings = new Map<string, Finding>();
  const answers: Record<string, number> = {};
  let calls = 0;
  const started = Date.now();
  const end = started + options.seconds * 1_000;
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
      calls += 1;
      const status = answer.status === undefined ? "none" : answer.status === 0 ? "OK" : Code[answer.status]!;
      answers[status] = (answers[status] ?? 0) + 1;
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
  await Promise.all(Array.from({ length: options.inFlight }, worker));
  for (const m of methods) m.client.close();
  return {
    answers,
    findings: [...findings.values()],
    calls,
    seconds: (Date.now() - started) / 1_000,
    methods: methods.length,
  };
}
