// Faults during an enrollment storm: 200 hosts join with an auto-approving token while each service in
// turn is killed with SIGKILL and started again, and then Postgres itself crashes and comes back. The
// services run as real processes on a private Postgres (the machine's shared one is never touched).
// Afterwards every host holds exactly one identity for its own key, no identity exists twice, and the
// CA, enrollment and registry agree on every node.
import type { Client } from "@connectrpc/connect";
import {
  createPool,
  inspectCertificate,
  verifyAuditChain,
  verifyChain,
  type ServiceName,
} from "@fabric/platform";
import { CaService, CertificateStatus, type CertificateInfo } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import type { Node } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { createPublicKey } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFabric, type Fabric } from "../harness/fabric.js";
import { clientAs } from "./support/callers.js";
import { startPrivatePostgres, type PrivatePostgres } from "./support/private-postgres.js";
import { enrollHost, makeHosts, type StormHost } from "./support/storm.js";

const HOSTS = 200;
const SERVICES: ServiceName[] = ["ca", "registry", "enrollment", "router"];
const FAULTS: (ServiceName | "postgres")[] = [...SERVICES, "postgres"];
// Hosts start in waves: one before the first fault, then one right after each fault hits.
const WAVE = Math.floor(HOSTS / (FAULTS.length + 1));
const DOWN_MS = 1_500;
const IN_FLIGHT = 25;
const DEAD_AFTER_MS = 15_000;

/** At most `n` of the functions given to run() are running at once; the rest wait their turn. */
class Semaphore {
  private waiting: (() => void)[] = [];
  constructor(private free: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free -= 1;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.free += 1;
    }
  }
}

let postgres: PrivatePostgres;
let fabric: Fabric;
const sharedDatabaseUrl = process.env.DATABASE_URL;

beforeAll(async () => {
  postgres = await startPrivatePostgres();
  // The harness creates its database on, and points the services at, whatever DATABASE_URL names.
  process.env.DATABASE_URL = postgres.url;
  fabric = await startFabric({
    services: ["ca", "registry", "enrollment", "router"],
    env: {
      enrollment: {
        FABRIC_RECONCILE_INTERVAL_MS: "500",
        FABRIC_ADDRESS_RATE_PER_SECOND: "10000",
        FABRIC_ADDRESS_BURST: "10000",
        FABRIC_CREDENTIAL_RATE_PER_SECOND: "10000",
        FABRIC_CREDENTIAL_BURST: "10000",
      },
    },
  });
  await fabric.client(RegistryService, "registry").createCluster({ clusterId: "c1", name: "Storm" });
}, 180_000);

afterAll(async () => {
  await fabric?.close();
  await postgres?.close();
  if (sharedDatabaseUrl === undefined) delete process.env.DATABASE_URL;
  else process.env.DATABASE_URL = sharedDatabaseUrl;
});

/**
 * Rejects, naming the service and quoting what it printed, when a service's /healthz has not answered
 * for DEAD_AFTER_MS: the process is gone (the harness restarts only the service a test stops).
 */
async function serviceDeath(fabric: Fabric, signal: AbortSignal): Promise<never> {
  const lastSeen = new Map(SERVICES.map((s) => [s, Date.now()]));
  for (;;) {
    await new Promise((r) => setTimeout(r, 1_000));
    if (signal.aborted) return new Promise<never>(() => {});
    for (const service of SERVICES) {
      const alive = await fetch(`${fabric.urls[service]!.http}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (alive) lastSeen.set(service, Date.now());
      else if (Date.now() - lastSeen.get(service)! > DEAD_AFTER_MS) {
        throw new Error(
          `the ${service} process died and stayed down:\n${fabric.output(service).slice(-3_000)}`,
        );
      }
    }
  }
}

async function allNodes(registry: Client<typeof RegistryService>): Promise<Node[]> {
  const out: Node[] = [];
  let pageToken = "";
  do {
    const page = await registry.listNodes({ clusterId: "c1", pageSize: 1000, pageToken });
    out.push(...page.nodes);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return out;
}

async function activeNodeCertificates(ca: Client<typeof CaService>): Promise<CertificateInfo[]> {
  const out: CertificateInfo[] = [];
  let pageToken = "";
  do {
    const page = await ca.listCertificates({
      principalKind: PrincipalKind.NODE,
      status: CertificateStatus.ACTIVE,
      pageSize: 1000,
      pageToken,
    });
    out.push(...page.certificates);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return out;
}

describe("an enrollment storm through crashes", () => {
  it(
    `enrolls all ${HOSTS} hosts exactly once while every service and Postgres crash in turn`,
    { timeout: 300_000 },
    async () => {
      const { token, joinToken } = await fabric.client(EnrollmentService, "enrollment").createJoinToken({
        clusterId: "c1",
        allowedRoles: ["relay-node"],
        maxUses: 1000,
        autoApprove: true,
      });
      const hosts = await makeHosts(HOSTS);
      const anonymous = clientAs(fabric, EnrollmentService, "enrollment", {
        caBundlePem: fabric.admin.caBundlePem,
      });
      const deadline = Date.now() + 150_000;
      const running: Promise<void>[] = [];
      // Hosts arrive faster than one enrollment replica serves them; at most IN_FLIGHT enroll at once, the
      // rest queue (as agents retrying with backoff would), so the storm lasts through every fault.
      const slots = new Semaphore(IN_FLIGHT);
      const launch = (batch: StormHost[]) => {
        for (const host of batch) {
          running.push(
            slots.run(() =>
              enrollHost(anonymous, token, host, deadline, {
                clusterId: "c1",
                capabilities: ["can_route_mesh"],
              }),
            ),
          );
        }
      };

      launch(hosts.slice(0, HOSTS - WAVE * FAULTS.length));
      for (const [i, fault] of FAULTS.entries()) {
        await new Promise((r) => setTimeout(r, 300));
        if (fault === "postgres") await postgres.crash();
        else await fabric.kill(fault);
        const from = HOSTS - WAVE * (FAULTS.length - i);
        launch(hosts.slice(from, from + WAVE));
        await new Promise((r) => setTimeout(r, DOWN_MS));
        if (fault === "postgres") await postgres.start();
        else await fabric.start(fault);
      }
      // A service that died and stays down will never let the storm finish: say which, at once.
      const watching = new AbortController();
      const results = await Promise.race([
        Promise.allSettled(running),
        serviceDeath(fabric, watching.signal),
      ]).finally(() => watching.abort());
      const failed = results.flatMap((r) => (r.status === "rejected" ? [String(r.reason)] : []));
      expect(failed, "every host enrolls once the control plane is back").toEqual([]);

      const seen: Record<string, number> = {};
      for (const h of hosts)
        for (const [code, n] of Object.entries(h.failures)) seen[code] = (seen[code] ?? 0) + n;
      console.warn(`storm: failures seen and retried by the hosts: ${JSON.stringify(seen)}`);

      // Every host holds a valid certificate for its own key, naming a node id no other host has.
      const ids = new Set<string>();
      for (const h of hosts) {
        const identity = h.identity!;
        const facts = inspectCertificate(identity.certificatePem);
        expect(facts.spiffeId).toBe(`spiffe://${fabric.trustDomain}/cluster/c1/node/${identity.nodeId}`);
        const certKey = createPublicKey(identity.certificatePem).export({ type: "spki", format: "der" });
        const hostKey = createPublicKey(h.privateKeyPem).export({ type: "spki", format: "der" });
        expect(certKey.equals(hostKey)).toBe(true);
        expect(verifyChain(identity.certificatePem, identity.chainPem, identity.caBundlePem)).toBe(true);
        ids.add(identity.nodeId);
      }
      expect(ids.size).toBe(HOSTS);

      // Enrollment: every request of the token approved once; a host has more than one request only if a
      // Join of its went unanswered (it may have been committed) and was sent again.
      const enrollment = createPool({ url: fabric.databaseUrl, schema: "enrollment", max: 1 });
      const { rows: requests } = await enrollment.query<{
        id: string;
        state: string;
        node_id: string;
        certificate_serial: string;
        public_key_sha256: string;
      }>(
        "SELECT id, state, node_id, certificate_serial, public_key_sha256 FROM join_requests WHERE token_id = $1",
        [joinToken!.id],
      );
      expect(requests.filter((r) => r.state !== "approved")).toEqual([]);
      for (const h of hosts) {
        const mine = requests.filter((r) => r.public_key_sha256 === h.publicKeySha256);
        expect(mine.map((r) => r.id)).toContain(h.identity!.joinRequestId);
        expect(
          mine.length - 1,
          `host ${h.index} has a request per unanswered Join at most`,
        ).toBeLessThanOrEqual(h.unansweredJoins);
      }
      const extra = requests.length - HOSTS;
      if (extra > 0)
        console.warn(`storm: ${extra} join request(s) came from Join calls whose answer was lost`);

      // The registry holds exactly one node per approved request, and nothing else.
      const nodes = await allNodes(fabric.client(RegistryService, "registry"));
      expect(nodes.map((n) => n.id).sort()).toEqual(requests.map((r) => r.node_id).sort());

      // The CA: exactly one active certificate per approved request, the one enrollment recorded; any
      // certificate issued for an approval interrupted by a crash and then abandoned has been revoked.
      const active = await activeNodeCertificates(fabric.client(CaService, "ca"));
      const recorded = new Set(requests.map((r) => r.certificate_serial));
      expect(
        active
          .filter((c) => !recorded.has(c.serial))
          .map((c) => `${c.serial} of ${c.principalId} (${c.authorizationRef})`),
        "active node certificates that no approved join request holds",
      ).toEqual([]);
      expect(active).toHaveLength(requests.length);
      for (const h of hosts) {
        const serial = inspectCertificate(h.identity!.certificatePem).serialHex;
        expect(active.find((c) => c.serial === serial)?.principalId).toBe(h.identity!.nodeId);
      }

      // Every audit chain survived the crashes intact.
      await enrollment.end();
      for (const schema of ["ca", "enrollment", "registry", "router"]) {
        const pool = createPool({ url: fabric.databaseUrl, schema, max: 1 });
        const chain = await verifyAuditChain(pool);
        await pool.end();
        expect([schema, chain.ok, chain.reason]).toEqual([schema, true, undefined]);
      }
    },
  );
});
