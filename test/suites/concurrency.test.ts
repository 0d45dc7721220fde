// Races on single-use credentials against the real services: 100 parallel uses of a single-use join token
// and of a developer PIN. Exactly one may win; every other attempt is refused with a code that says it
// lost (never a fault or an overloaded service), and exactly one identity comes out of it.
import { Code } from "@connectrpc/connect";
import { buildCsr, createPool, generateP256KeyPair } from "@fabric/platform";
import { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NO_ENROLLMENT_RATE_LIMITS, startFabric, type Fabric } from "../harness/fabric.js";
import { clientAs } from "./support/callers.js";
import { codeOf, describeOutcome, type Outcome } from "./support/rpc.js";

const PARALLEL = 100;

let fabric: Fabric;

beforeAll(async () => {
  fabric = await startFabric({
    services: ["ca", "registry", "enrollment"],
    env: {
      enrollment: {
        // One address and one credential make every attempt here: the rate limits are not under test.
        ...NO_ENROLLMENT_RATE_LIMITS,
      },
    },
  });
  const registry = fabric.client(RegistryService, "registry");
  await registry.createCluster({ clusterId: "c1", name: "One" });
  await registry.createOrganization({ organizationId: "o1", name: "Org" });
}, 180_000);

afterAll(async () => {
  await fabric?.close();
});

/** Outcome name → how many attempts ended that way. */
function tally(outcomes: Outcome[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const o of outcomes) out[describeOutcome(o)] = (out[describeOutcome(o)] ?? 0) + 1;
  return out;
}

/** Certificates the CA issued to one principal, straight from its inventory. */
async function certificatesOf(kind: string, id: string): Promise<number> {
  const pool = createPool({ url: fabric.databaseUrl, schema: "ca" });
  try {
    const { rows } = await pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM certificates WHERE principal_kind = $1 AND principal_id = $2",
      [kind, id],
    );
    return rows[0]!.n;
  } finally {
    await pool.end();
  }
}

const csrs = () =>
  Promise.all(Array.from({ length: PARALLEL }, () => buildCsr(generateP256KeyPair().privateKeyPem, "x")));

describe(`${PARALLEL} parallel uses of one single-use credential`, () => {
  it("a join token: one join request, the rest refused as used up", async () => {
    const admin = fabric.client(EnrollmentService, "enrollment");
    const anonymous = clientAs(fabric, EnrollmentService, "enrollment", {
      caBundlePem: fabric.admin.caBundlePem,
    });
    const { token } = await admin.createJoinToken({
      clusterId: "c1",
      allowedRoles: ["relay-node"],
      maxUses: 1,
    });
    const requests = await csrs();
    const facts = { hostname: "racer", os: "linux", arch: "x64", agentVersion: "1.0.0" };
    const outcomes = await Promise.all(
      requests.map((csrPem) => codeOf(anonymous.join({ token, csrPem, facts }))),
    );
    expect(tally(outcomes)).toEqual({ ok: 1, FailedPrecondition: PARALLEL - 1 });
    const pending = await admin.listJoinRequests({ clusterId: "c1" });
    expect(pending.joinRequests.length).toBe(1);
  }, 120_000);

  it("a developer PIN: one certificate, the rest refused as in use or used", async () => {
    const admin = fabric.client(EnrollmentService, "enrollment");
    const anonymous = clientAs(fabric, EnrollmentService, "enrollment", {
      caBundlePem: fabric.admin.caBundlePem,
    });
    const { pin } = await admin.issueDeveloperPin({ developerId: "dev-race", organizationId: "o1" });
    const requests = await csrs();
    const outcomes = await Promise.all(
      requests.map((csrPem) =>
        codeOf(anonymous.bootstrapDeveloper({ developerId: "dev-race", pin, csrPem })),
      ),
    );
    const counts = tally(outcomes);
    expect(counts["ok"]).toBe(1);
    // Losers lost the race (Aborted: another bootstrap holds the PIN) or came after the winner
    // (FailedPrecondition: already used); nothing else, in particular no Unavailable or Internal.
    expect(
      Object.keys(counts).filter((k) => k !== "ok" && k !== "Aborted" && k !== "FailedPrecondition"),
    ).toEqual([]);
    expect(await certificatesOf("user", "dev-race")).toBe(1);
    // The PIN is spent: one more try is refused as used.
    const late = await codeOf(
      anonymous.bootstrapDeveloper({ developerId: "dev-race", pin, csrPem: requests[0]! }),
    );
    expect(late).toBe(Code.FailedPrecondition);
  }, 120_000);
});
