// Every service's audit log, against the real services as processes on a real Postgres: ListAudit and
// VerifyAudit on ca, enrollment, registry and router from both sides of each scope, a rewrite and a
// truncation done as the database superuser reported through VerifyAudit and `fabric audit verify`, and
// every service connected as its own unprivileged role.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { createPool, inspectCertificate, type ServiceName, type TlsCredentials } from "@fabric/platform";
import { rewriteAuditRecord, truncateAuditLog } from "@fabric/platform/testing";
import { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { RouterService } from "@fabric/proto/fabric/router/v1/router_pb.js";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { runFabricHere, writeFabricHome } from "../../cli/test/fixtures/run-fabric.js";
import { startFabric, type Fabric } from "../harness/fabric.js";

const SERVICES: [ServiceName, DescService][] = [
  ["ca", CaService],
  ["enrollment", EnrollmentService],
  ["registry", RegistryService],
  ["router", RouterService],
];

/** ListAudit and VerifyAudit, the same shapes on every service. */
interface AuditApi {
  listAudit(req: {
    clusterId?: string;
    organizationId?: string;
    actionPrefix?: string;
    pageSize?: number;
  }): Promise<{
    events: {
      actor?: { id: string };
      clusterId: string;
      organizationId: string;
      service: string;
      seq: bigint;
    }[];
  }>;
  verifyAudit(req: { fromSeq?: bigint; toSeq?: bigint }): Promise<{
    ok: boolean;
    firstBrokenSeq: bigint;
    rowsChecked: bigint;
    lastSeq: bigint;
    problem: string;
  }>;
}

let fabric: Fabric;
let ids: Record<"clusterAdmin1" | "clusterAdmin2" | "orgAdmin1" | "orgAdmin2" | "node", TlsCredentials>;
const api = (name: ServiceName, service: DescService, as?: TlsCredentials) =>
  fabric.client(service, name, as) as unknown as AuditApi;
const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => "ok",
    (err: unknown) => Code[ConnectError.from(err).code],
  );

beforeAll(async () => {
  fabric = await startFabric({ services: ["ca", "registry", "enrollment", "router"] });
  ids = {
    clusterAdmin1: await fabric.issue({
      kind: "admin",
      id: "cadmin-c1",
      grant: "cluster-admin",
      cluster: "c1",
    }),
    clusterAdmin2: await fabric.issue({
      kind: "admin",
      id: "cadmin-c2",
      grant: "cluster-admin",
      cluster: "c2",
    }),
    orgAdmin1: await fabric.issue({ kind: "admin", id: "oadmin-o1", grant: "org-admin", organization: "o1" }),
    orgAdmin2: await fabric.issue({ kind: "admin", id: "oadmin-o2", grant: "org-admin", organization: "o2" }),
    node: await fabric.issue({ kind: "node", id: "n-1", cluster: "c1" }),
  };
  // Events of every scope in every log: each refused call is audited with its caller's cluster and
  // organization (by the service, beside the call).
  for (const [name, service] of SERVICES) {
    for (const who of Object.values(ids))
      expect(await codeOf(api(name, service, who).verifyAudit({}))).toBe("PermissionDenied");
  }
  for (const [name, service] of SERVICES) {
    await vi.waitFor(
      async () => {
        const { events } = await api(name, service).listAudit({
          actionPrefix: "rpc.authorize",
          pageSize: 1000,
        });
        expect(new Set(events.map((e) => e.actor?.id)).size).toBe(Object.keys(ids).length);
      },
      { timeout: 20_000, interval: 50 },
    );
  }
}, 240_000);

afterAll(async () => {
  await fabric?.close();
});

describe.each(SERVICES)("the %s service's audit log", (name, service) => {
  it("is listed whole to a platform-admin and verified by one", async () => {
    const { events } = await api(name, service).listAudit({ pageSize: 1000 });
    expect(new Set(events.map((e) => e.service))).toEqual(new Set([name]));
    expect(events.map((e) => e.actor?.id)).toEqual(
      expect.arrayContaining(["cadmin-c1", "cadmin-c2", "oadmin-o1", "oadmin-o2"]),
    );
    expect(await api(name, service).verifyAudit({})).toMatchObject({ ok: true, problem: "" });
  });

  it("is listed to a cluster-admin only for its cluster; another cluster is refused", async () => {
    const asC1 = api(name, service, ids.clusterAdmin1);
    const { events } = await asC1.listAudit({ pageSize: 1000 });
    expect(events.map((e) => e.actor?.id)).toContain("cadmin-c1");
    expect(events.every((e) => e.clusterId === "c1")).toBe(true);
    expect((await asC1.listAudit({ clusterId: "c1" })).events.length).toBe(events.length);
    expect(await codeOf(asC1.listAudit({ clusterId: "c2" }))).toBe("PermissionDenied");
  });

  it("is listed to an org-admin only for its organization; another organization is refused", async () => {
    const asO1 = api(name, service, ids.orgAdmin1);
    const { events } = await asO1.listAudit({ pageSize: 1000 });
    expect(events.map((e) => e.actor?.id)).toContain("oadmin-o1");
    expect(events.every((e) => e.organizationId === "o1")).toBe(true);
    expect(await codeOf(asO1.listAudit({ organizationId: "o2" }))).toBe("PermissionDenied");
  });

  it("is neither listed to a node nor verified by anyone but a platform-admin", async () => {
    expect(await codeOf(api(name, service, ids.node).listAudit({}))).toBe("PermissionDenied");
    for (const who of [ids.clusterAdmin1, ids.orgAdmin1, ids.node]) {
      expect(await codeOf(api(name, service, who).verifyAudit({}))).toBe("PermissionDenied");
    }
  });
});

describe("tampering by the database superuser", () => {
  it("a record rewritten and the chain re-hashed is reported at that record", async () => {
    const router = api("router", RouterService);
    // An intact verification anchors the head with a checkpoint signed by the router.
    const before = await router.verifyAudit({});
    expect(before.ok).toBe(true);
    await rewriteAuditRecord(fabric.databaseUrl, "router", 2n);
    const after = await router.verifyAudit({});
    expect(after).toMatchObject({ ok: false, firstBrokenSeq: 2n, rowsChecked: 1n, lastSeq: 1n });
    expect(after.problem).toMatch(/^rewritten: record 2 /);
  });

  it("records cut off the end are reported from the first one gone, also by `fabric audit verify`", async () => {
    const enrollment = api("enrollment", EnrollmentService);
    const { lastSeq } = await enrollment.verifyAudit({});
    await truncateAuditLog(fabric.databaseUrl, "enrollment", lastSeq - 2n);
    expect(await enrollment.verifyAudit({})).toMatchObject({
      ok: false,
      firstBrokenSeq: lastSeq - 1n,
      problem: expect.stringMatching(
        new RegExp(`^truncated: .* records ${lastSeq - 1n}-${lastSeq} were removed$`),
      ),
    });

    const home = mkdtempSync(join(tmpdir(), "fabric-audit-"));
    try {
      const servers = Object.fromEntries(SERVICES.map(([n]) => [n, fabric.urls[n]!.grpc]));
      writeFabricHome(home, fabric.trustDomain, {
        admin: { identity: fabric.admin, identityId: "admin", servers },
      });
      const cli = await runFabricHere(["audit", "verify", "--service", "enrollment"], { home });
      expect(cli.code).toBe(1);
      expect(cli.stderr).toMatch(
        new RegExp(`the enrollment's audit chain is broken at record ${lastSeq - 1n}: truncated`),
      );
      const ls = await runFabricHere(["audit", "ls", "--service", "ca", "-o", "json"], { home });
      expect(ls.code).toBe(0);
      expect((JSON.parse(ls.stdout) as { events: { service: string }[] }).events[0]?.service).toBe("ca");
      // Without --service: the registry's, as before.
      expect((await runFabricHere(["audit", "verify"], { home })).code).toBe(0);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describe("a service stopping", () => {
  it("signs a checkpoint of every record it holds", async () => {
    const pool = createPool({ url: fabric.databaseUrl, schema: "ca", max: 1 });
    try {
      // A new record (written with the revocation, before the answer), beyond any checkpoint so far.
      const { serialHex } = inspectCertificate(
        (await fabric.issue({ kind: "node", id: "n-gone", cluster: "c1" })).certificatePem,
      );
      await fabric.client(CaService, "ca").revoke({ target: { case: "serial", value: serialHex } });
      await fabric.stop("ca");
      const { rows } = await pool.query<{ head: string; anchored: string }>(
        "SELECT (SELECT seq::text FROM audit_head) AS head, (SELECT max(seq)::text FROM audit_checkpoints) AS anchored",
      );
      expect(rows[0]!.anchored).toBe(rows[0]!.head);
    } finally {
      await pool.end();
      await fabric.start("ca");
    }
  });
});

describe("the services' database connections", () => {
  it("are each service's own unprivileged role", async () => {
    const pool = createPool({ url: fabric.databaseUrl, schema: "public", max: 1 });
    try {
      const { rows } = await pool.query<{ app: string; role: string; superuser: boolean }>(
        `SELECT DISTINCT a.application_name AS app, a.usename AS role, r.rolsuper AS superuser
         FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()`,
      );
      expect(rows.filter((r) => r.superuser)).toEqual([]);
      for (const [name] of SERVICES) {
        expect(
          rows.filter((r) => r.app === `fabric-${name}`).map((r) => r.role),
          name,
        ).toEqual([`fabric_${name}`]);
      }
    } finally {
      await pool.end();
    }
  });
});
