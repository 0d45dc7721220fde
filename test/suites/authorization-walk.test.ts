// Every RPC of every service, called by every kind of caller its authorization table does not admit:
// each is refused (PermissionDenied, or Unauthenticated without a certificate) before the handler runs,
// and nothing in any service's tables changes. The admitted callers are called too, to prove the table
// is what decides (they get past authorization, whatever the handler then says about an empty request).
import type { DescService } from "@bufbuild/protobuf";
import { Code, type Client } from "@connectrpc/connect";
import { allows, type Rule, type ServiceName } from "@fabric/platform";
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
import { clientAs, everyCaller, type Caller } from "./support/callers.js";
import { callEmpty, describeOutcome, type Outcome } from "./support/rpc.js";
import { auditHead, auditSince, stateFingerprint } from "./support/state.js";

interface Target {
  name: ServiceName;
  service: DescService;
  policy: Record<string, Rule>;
  /** Whether the TLS handshake itself demands a client certificate. */
  certificateRequired: boolean;
}

const TARGETS: Target[] = [
  { name: "ca", service: CaService, policy: CA_POLICY, certificateRequired: true },
  { name: "enrollment", service: EnrollmentService, policy: ENROLLMENT_POLICY, certificateRequired: false },
  { name: "registry", service: RegistryService, policy: REGISTRY_POLICY, certificateRequired: true },
  { name: "router", service: RouterService, policy: ROUTER_POLICY, certificateRequired: true },
];

// How long an admitted streaming call is kept open before the test cuts it.
const ADMITTED_STREAM_MS = 2_000;
const PARALLEL_CALLS = 12;

let fabric: Fabric;
let callers: Caller[];

beforeAll(async () => {
  fabric = await startFabric({ services: ["ca", "registry", "enrollment", "router"] });
  callers = await everyCaller(fabric);
  const actors = new Map(
    callers.map((c) => [
      c.label,
      c.principal ? `${c.principal.kind}/${c.principal.id}` : "anonymous/anonymous",
    ]),
  );
  auditedActor = (label) => actors.get(label)!;
}, 180_000);

afterAll(async () => {
  await fabric?.close();
});

/** What the table says should happen to `caller` calling a method with `rule`. */
function decision(rule: Rule, caller: Caller): "admitted" | Code {
  if (rule.anonymous) return "admitted";
  if (!caller.principal) return Code.Unauthenticated;
  return allows(rule, caller.principal) ? "admitted" : Code.PermissionDenied;
}

interface Attempt {
  rpc: string;
  caller: string;
  expected: "admitted" | Code;
  outcome: Outcome;
  message: string;
}

/** How a caller of support/callers.ts shows in an audit event: kind/id. */
let auditedActor: (label: string) => string;

async function inBatches<T, R>(items: T[], size: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += size)
    out.push(...(await Promise.all(items.slice(i, i + size).map(fn))));
  return out;
}

describe("the authorization tables", () => {
  it("list every method of their service, and only those", () => {
    for (const t of TARGETS) {
      expect(Object.keys(t.policy).sort(), t.service.typeName).toEqual(
        t.service.methods.map((m) => m.localName).sort(),
      );
    }
  });

  it(
    "refuse every RPC to every caller kind they do not admit, changing nothing",
    { timeout: 240_000 },
    async () => {
      // The CA takes offline-issued fixtures into its inventory lazily; have it do so before the baseline.
      await fabric.client(CaService, "ca").listCertificates({});
      const before = await stateFingerprint(fabric.databaseUrl);
      const heads = new Map(
        await Promise.all(
          TARGETS.map(async (t) => [t.name, await auditHead(fabric.databaseUrl, t.name)] as const),
        ),
      );
      const jobs = TARGETS.flatMap((t) =>
        t.service.methods.flatMap((method) =>
          callers.map((caller) => ({
            t,
            method,
            caller,
            expected: decision(t.policy[method.localName]!, caller),
          })),
        ),
      );
      const clients = new Map<string, Client<never>>();
      const clientFor = (t: Target, caller: Caller) => {
        const key = `${t.name}|${caller.label}`;
        if (!clients.has(key)) {
          clients.set(
            key,
            clientAs(fabric, t.service, t.name, caller.credentials) as unknown as Client<never>,
          );
        }
        return clients.get(key)!;
      };
      const attempts: Attempt[] = await inBatches(
        jobs,
        PARALLEL_CALLS,
        async ({ t, method, caller, expected }) => {
          const signal = AbortSignal.timeout(ADMITTED_STREAM_MS);
          const { outcome, message } = await callEmpty(clientFor(t, caller), method, signal);
          return { rpc: `${t.name}/${method.name}`, caller: caller.label, expected, outcome, message };
        },
      );

      const refused = attempts.filter((a) => a.expected !== "admitted");
      const admitted = attempts.filter((a) => a.expected === "admitted");
      // Every service refuses someone, and every caller kind is refused somewhere: the walk is not vacuous.
      expect(new Set(refused.map((a) => a.rpc.split("/")[0])).size).toBe(TARGETS.length);
      expect(new Set(refused.map((a) => a.caller)).size).toBe(callers.length);

      const wrong = refused.filter((a) => {
        if (a.expected === Code.PermissionDenied) {
          return a.outcome !== Code.PermissionDenied || !/may not call/.test(a.message);
        }
        // No certificate: where certificates are required the TLS handshake itself refuses it (the server
        // sends the TLS 1.3 "certificate required" alert, which the client reports as it sees fit, and no
        // handler ever runs); otherwise the authorization interceptor answers Unauthenticated.
        const target = TARGETS.find((t) => a.rpc.startsWith(`${t.name}/`))!;
        return target.certificateRequired
          ? a.outcome === "ok" || !/alert certificate required/.test(a.message)
          : a.outcome !== Code.Unauthenticated;
      });
      expect(
        wrong.map((a) => `${a.caller} → ${a.rpc}: ${describeOutcome(a.outcome)} ${a.message}`),
        "callers the table does not admit must be refused",
      ).toEqual([]);

      // The admitted side: past the table, whatever the handler says about an empty request.
      const blocked = admitted.filter(
        (a) =>
          (a.outcome === Code.PermissionDenied && /may not call/.test(a.message)) ||
          a.outcome === Code.Unauthenticated ||
          a.outcome === Code.Internal ||
          a.outcome === Code.Unknown,
      );
      expect(
        blocked.map((a) => `${a.caller} → ${a.rpc}: ${describeOutcome(a.outcome)} ${a.message}`),
        "callers the table admits must get past authorization",
      ).toEqual([]);

      expect(await stateFingerprint(fabric.databaseUrl)).toEqual(before);

      // Every refusal that reached a service (all but the handshake's) is in that service's audit log,
      // naming the caller, the RPC and the code.
      const expectedEvents = refused
        .filter((a) => a.outcome === Code.PermissionDenied || a.outcome === Code.Unauthenticated)
        .map(
          (a) =>
            `${a.rpc.split("/")[0]} ${auditedActor(a.caller)} ${a.rpc.split("/")[1]} ${describeOutcome(a.outcome)}`,
        )
        .sort();
      expect(expectedEvents.length).toBeGreaterThan(100);
      await expect
        .poll(
          async () => {
            const seen = new Set<string>();
            for (const t of TARGETS) {
              for (const e of await auditSince(fabric.databaseUrl, t.name, heads.get(t.name)!)) {
                if (e.action !== "rpc.authorize" || e.outcome !== "refused") continue;
                seen.add(
                  `${t.name} ${e.actor_kind}/${e.actor_id} ${e.target_id.split("/")[1]} ${e.details.code}`,
                );
              }
            }
            return expectedEvents.filter((x) => !seen.has(x));
          },
          { timeout: 10_000, interval: 250 },
        )
        .toEqual([]);
    },
  );
});
