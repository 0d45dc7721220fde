// Faults during an enrollment storm: 200 hosts join with an auto-approving token (retrying as an
// operator's supervisor would) while each service in turn is killed with SIGKILL and started again, and
// then Postgres itself crashes and restarts. Afterwards every host must hold exactly one identity: one
// join request per host, one registered node per host, one valid certificate per node, and the token
// used exactly once per host. Postgres here is a private server of this file's own, so it can crash.
import { X509Certificate, createPublicKey } from "node:crypto";
import { createPool, type ServiceName } from "@fabric/platform";
import { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NO_ENROLLMENT_RATE_LIMITS, startFabric, type Fabric } from "../harness/fabric.js";
import { clientAs } from "./support/callers.js";
import { startPrivatePostgres, type PrivatePostgres } from "./support/private-postgres.js";
import { enrollHost, makeHosts, type StormHost } from "./support/storm.js";

const HOSTS = 200;
const AT_ONCE = 40;
const CLUSTER = "c-storm";

let postgres: PrivatePostgres;
let fabric: Fabric;
const sharedDatabaseUrl = process.env.DATABASE_URL;

beforeAll(async () => {
  postgres = await startPrivatePostgres();
  // The harness creates the fabric's database on the server DATABASE_URL names: this file's own.
  process.env.DATABASE_URL = postgres.url;
  fabric = await startFabric({
    services: ["ca", "registry", "enrollment", "router"],
    env: {
      enrollment: {
        ...NO_ENROLLMENT_RATE_LIMITS,
        // Interrupted approvals and abandoned certificates are picked up quickly.
        FABRIC_RECONCILE_INTERVAL_MS: "1000",
      },
    },
  });
  await fabric.client(RegistryService, "registry").createCluster({ clusterId: CLUSTER, name: "Storm" });
}, 180_000);

afterAll(async () => {
  await fabric?.close();
  await postgres?.close();
  if (sharedDatabaseUrl === undefined) delete process.env.DATABASE_URL;
  else process.env.DATABASE_URL = sharedDatabaseUrl;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const enrolledCount = (hosts: StormHost[]) => hosts.filter((h) => h.identity).length;

/** Resolves once `n` hosts hold an identity (or all enrollments have ended). */
async function untilEnrolled(hosts: StormHost[], n: number, done: () => boolean): Promise<void> {
  while (enrolledCount(hosts) < n && !done()) await sleep(50);
}

async function query<T extends object>(schema: string, sql: string): Promise<T[]> {
  const pool = createPool({ url: fabric.databaseUrl, schema });
  try {
    return (await pool.query<T>(sql)).rows;
  } finally {
    await pool.end();
  }
}

describe(`${HOSTS} hosts enrolling through faults`, () => {
  it("kill -9 of each service in turn and a Postgres crash lose and duplicate no identity", async () => {
    const admin = fabric.client(EnrollmentService, "enrollment");
    const { token, joinToken } = await admin.createJoinToken({
      clusterId: CLUSTER,
      allowedRoles: ["relay-node"],
      maxUses: HOSTS,
      autoApprove: true,
    });
    const hosts = await makeHosts(HOSTS);
    const anonymous = clientAs(fabric, EnrollmentService, "enrollment", {
      caBundlePem: fabric.admin.caBundlePem,
    });
    const deadline = Date.now() + 240_000;
    let next = 0;
    let finished = false;
    const lane = async () => {
      while (next < hosts.length) {
        const host = hosts[next++]!;
        await enrollHost(anonymous, token, host, deadline, {
          clusterId: CLUSTER,
          capabilities: ["can_route_mesh"],
        });
      }
    };
    const storm = Promise.all(Array.from({ length: AT_ONCE }, lane)).finally(() => (finished = true));
    storm.catch(() => {}); // awaited below; the fault loop must not see an unhandled rejection meanwhile

    // Each fault strikes at the next eighth of the storm, so all of them land while hosts are enrolling.
    const faults: { fault: string; enrolled: number }[] = [];
    const plan: (ServiceName | "postgres")[] = ["ca", "registry", "postgres", "enrollment", "router"];
    for (const [i, target] of plan.entries()) {
      await untilEnrolled(hosts, Math.floor((HOSTS * (i + 1)) / 8), () => finished);
      faults.push({
        fault: target === "postgres" ? "postgres crashed" : `${target} killed`,
        enrolled: enrolledCount(hosts),
      });
      if (target === "postgres") {
        await postgres.crash();
        await sleep(1_000);
        await postgres.start();
      } else {
        await fabric.kill(target);
        await sleep(500);
        await fabric.start(target);
      }
    }
    await storm;
    process.stdout.write(`faults: ${JSON.stringify(faults)}\n`);
    expect(faults.filter((f) => f.enrolled >= HOSTS)).toEqual([]);

    // Every host enrolled, with a certificate for its own key.
    expect(hosts.filter((h) => !h.identity).map((h) => `${h.index}: ${h.lastFailure}`)).toEqual([]);
    for (const host of hosts) {
      const certificate = new X509Certificate(host.identity!.certificatePem);
      expect(certificate.publicKey.export({ type: "spki", format: "der" })).toEqual(
        createPublicKey(host.privateKeyPem).export({ type: "spki", format: "der" }),
      );
    }
    const nodeIds = hosts.map((h) => h.identity!.nodeId);
    expect(new Set(nodeIds).size).toBe(HOSTS);

    // Enrollment: one join request per host key, the token used once per host.
    const requests = await query<{ key: string; n: number }>(
      "enrollment",
      `SELECT public_key_sha256 AS key, count(*)::int AS n FROM join_requests GROUP BY 1`,
    );
    expect(requests.filter((r) => r.n !== 1)).toEqual([]);
    expect(requests.map((r) => r.key).sort()).toEqual(hosts.map((h) => h.publicKeySha256).sort());
    const [tokenRow] = await query<{ uses: number }>(
      "enrollment",
      `SELECT uses FROM join_tokens WHERE id = '${joinToken!.id}'`,
    );
    expect(tokenRow!.uses).toBe(HOSTS);

    // Registry: exactly the hosts' nodes, once each.
    const nodes = await query<{ id: string }>("registry", "SELECT id FROM nodes");
    expect(nodes.map((n) => n.id).sort()).toEqual([...nodeIds].sort());

    // CA: one valid certificate per node, the one the host holds. A certificate issued for a call whose
    // answer was lost to a crash is revoked (it never reached anyone), so it names no usable identity.
    await expect
      .poll(
        async () =>
          (
            await query<{ principal_id: string; n: number }>(
              "ca",
              `SELECT principal_id, count(*)::int AS n FROM certificates
               WHERE principal_kind = 'node' AND cluster_id = '${CLUSTER}' AND revoked_at IS NULL GROUP BY 1`,
            )
          ).filter((r) => r.n !== 1),
        { timeout: 20_000, interval: 500 },
      )
      .toEqual([]);
    const valid = await query<{ serial: string; principal_id: string }>(
      "ca",
      `SELECT serial, principal_id FROM certificates
       WHERE principal_kind = 'node' AND cluster_id = '${CLUSTER}' AND revoked_at IS NULL`,
    );
    expect(valid.map((c) => c.principal_id).sort()).toEqual([...nodeIds].sort());
    const held = new Map(valid.map((c) => [c.principal_id, c.serial]));
    for (const host of hosts) {
      const serial = new X509Certificate(host.identity!.certificatePem).serialNumber
        .toLowerCase()
        .replace(/^0+/, "");
      expect(held.get(host.identity!.nodeId)?.replace(/^0+/, "")).toBe(serial);
    }
  }, 300_000);
});
