// Single-use credentials under a crowd: 100 parallel uses of one join token and of one developer PIN,
// against the real services as processes, give exactly one success; a token allowing ten uses gives
// exactly ten. The losers get FailedPrecondition, and the stored state shows exactly the winners.
import { Code, type Client } from "@connectrpc/connect";
import { buildCsr, createPool, generateP256KeyPair, type Pool } from "@fabric/platform";
import { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFabric, type Fabric } from "../harness/fabric.js";
import { clientAs } from "./support/callers.js";
import { codeOf, type Outcome } from "./support/rpc.js";

const CROWD = 100;

let fabric: Fabric;
let pool: Pool;
let anonymous: Client<typeof EnrollmentService>;
let admin: Client<typeof EnrollmentService>;

beforeAll(async () => {
  fabric = await startFabric({
    services: ["ca", "registry", "enrollment"],
    env: {
      enrollment: {
        // The crowd comes from one address: the rate limits are not what is tested here.
        FABRIC_ADDRESS_RATE_PER_SECOND: "10000",
        FABRIC_ADDRESS_BURST: "10000",
        FABRIC_CREDENTIAL_RATE_PER_SECOND: "10000",
        FABRIC_CREDENTIAL_BURST: "10000",
      },
    },
  });
  pool = createPool({ url: fabric.databaseUrl, schema: "enrollment", max: 1 });
  anonymous = clientAs(fabric, EnrollmentService, "enrollment", { caBundlePem: fabric.admin.caBundlePem });
  admin = clientAs(fabric, EnrollmentService, "enrollment", fabric.admin);
  await fabric.client(RegistryService, "registry").createCluster({ clusterId: "c1", name: "Cluster one" });
}, 180_000);

afterAll(async () => {
  await pool?.end();
  await fabric?.close();
});

const facts = { hostname: "crowd", os: "linux", arch: "x64", agentVersion: "1.0.0" };

async function csrs(n: number): Promise<string[]> {
  return Promise.all(
    Array.from({ length: n }, () => buildCsr(generateP256KeyPair().privateKeyPem, "ignored")),
  );
}

const tally = (outcomes: Outcome[]) => {
  const counts = new Map<string, number>();
  for (const o of outcomes)
    counts.set(o === "ok" ? "ok" : Code[o], (counts.get(o === "ok" ? "ok" : Code[o]) ?? 0) + 1);
  return Object.fromEntries([...counts].sort());
};

async function requestsOf(tokenId: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM join_requests WHERE token_id = $1",
    [tokenId],
  );
  return rows[0]!.n;
}

describe(`${CROWD} parallel uses`, () => {
  it("of a single-use join token: exactly one join request", async () => {
    const token = await admin.createJoinToken({ clusterId: "c1", maxUses: 1 });
    const bodies = await csrs(CROWD);
    const outcomes = await Promise.all(
      bodies.map((csrPem) => codeOf(anonymous.join({ token: token.token, csrPem, facts }))),
    );
    expect(tally(outcomes)).toEqual({ FailedPrecondition: CROWD - 1, ok: 1 });
    expect(await requestsOf(token.joinToken!.id)).toBe(1);
    const listed = await admin.listJoinTokens({ clusterId: "c1" });
    expect(listed.joinTokens.find((t) => t.id === token.joinToken!.id)!.uses).toBe(1);
  });

  it("of a token allowing ten uses: exactly ten join requests", async () => {
    const token = await admin.createJoinToken({ clusterId: "c1", maxUses: 10 });
    const bodies = await csrs(CROWD);
    const outcomes = await Promise.all(
      bodies.map((csrPem) => codeOf(anonymous.join({ token: token.token, csrPem, facts }))),
    );
    expect(tally(outcomes)).toEqual({ FailedPrecondition: CROWD - 10, ok: 10 });
    expect(await requestsOf(token.joinToken!.id)).toBe(10);
  });

  it("of a developer PIN: exactly one certificate", { timeout: 60_000 }, async () => {
    const { pin } = await admin.issueDeveloperPin({ developerId: "dev-crowd" });
    const bodies = await csrs(CROWD);
    const outcomes = await Promise.all(
      bodies.map((csrPem) => codeOf(anonymous.bootstrapDeveloper({ developerId: "dev-crowd", pin, csrPem }))),
    );
    expect(tally(outcomes)).toEqual({ FailedPrecondition: CROWD - 1, ok: 1 });
    const issued = await fabric.client(CaService, "ca").listCertificates({ principalId: "dev-crowd" });
    expect(issued.certificates).toHaveLength(1);
    const { rows } = await pool.query<{ used: boolean; failed_attempts: number }>(
      "SELECT used_at IS NOT NULL AS used, failed_attempts FROM developer_pins WHERE developer_id = 'dev-crowd'",
    );
    expect(rows).toEqual([{ used: true, failed_attempts: 0 }]);
  });
});
