// Tenant binding of every id in a CaService request: for each RPC that names a principal, cluster,
// organization or certificate serial, and each kind of caller, the call is allowed in the caller's scope
// and refused (PermissionDenied or NotFound) outside it, with nothing changed in the CA's tables on
// refusal. A cluster-admin's listings show only its cluster whatever it filters by.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  CaService,
  SignRequestSchema,
  type RevokeRequestSchema,
  type SignRequest,
} from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { buildCsr, createPool, generateP256KeyPair, type Pool, type TlsCredentials } from "@fabric/platform";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFabric, type Fabric } from "../../../test/harness/fabric.js";

let fabric: Fabric;
let pool: Pool;

const CALLERS = [
  "platform-admin",
  "cluster-admin of A",
  "cluster-admin of B",
  "org-admin of X",
  "org-admin of Y",
  "node of A",
  "developer of X",
  "enrollment",
  "registry",
  "router",
] as const;
type Caller = (typeof CALLERS)[number];
const callers = {} as Record<Caller, TlsCredentials>;

beforeAll(async () => {
  fabric = await startFabric({ services: ["ca"] });
  pool = createPool({ url: fabric.databaseUrl, schema: "ca" });
  callers["platform-admin"] = fabric.admin;
  callers["cluster-admin of A"] = await fabric.issue({
    kind: "admin",
    id: "admin-a",
    cluster: "a",
    grant: "cluster-admin",
  });
  callers["cluster-admin of B"] = await fabric.issue({
    kind: "admin",
    id: "admin-b",
    cluster: "b",
    grant: "cluster-admin",
  });
  callers["org-admin of X"] = await fabric.issue({
    kind: "admin",
    id: "admin-x",
    organization: "x",
    grant: "org-admin",
  });
  callers["org-admin of Y"] = await fabric.issue({
    kind: "admin",
    id: "admin-y",
    organization: "y",
    grant: "org-admin",
  });
  callers["node of A"] = await fabric.issue({ kind: "node", id: "n-a", cluster: "a" });
  callers["developer of X"] = await fabric.issue({
    kind: "user",
    id: "dev-x",
    organization: "x",
    grant: "developer",
  });
  for (const name of ["enrollment", "registry", "router"] as const)
    callers[name] = fabric.serviceIdentity(name);
  // Brings the identities issued offline above into the inventory now, not during a call under test.
  await ca("platform-admin").listCertificates({});
});

afterAll(async () => {
  await pool?.end();
  await fabric?.close();
});

const ca = (who: Caller) => fabric.client(CaService, "ca", callers[who]);

let principals = 0;
const fresh = (prefix: string) => `${prefix}-${++principals}`;

async function signRequest(init: MessageInitShape<typeof SignRequestSchema>): Promise<SignRequest> {
  const key = generateP256KeyPair();
  return create(SignRequestSchema, {
    csrPem: await buildCsr(key.privateKeyPem, "ignored"),
    authorizationRef: "test/tenant-scope",
    ...init,
  });
}

/** A certificate issued through Sign, as enrollment gets them: its serial. */
async function issued(init: MessageInitShape<typeof SignRequestSchema>): Promise<string> {
  return (await ca("enrollment").sign(await signRequest(init))).serial;
}

const nodeIn = (clusterId: string, principalId = fresh(`n-${clusterId}`)) =>
  issued({ principalKind: PrincipalKind.NODE, principalId, clusterId });

/** Everything the CA stores but its audit log (refusals are audited). */
async function storedState(): Promise<string> {
  const { rows: tables } = await pool.query<{ name: string }>(
    `SELECT table_name AS name FROM information_schema.tables
      WHERE table_schema = 'ca' AND table_type = 'BASE TABLE' AND table_name NOT LIKE 'audit%'
      ORDER BY table_name`,
  );
  const dump: Record<string, unknown[]> = {};
  for (const { name } of tables)
    dump[name] = (await pool.query(`SELECT * FROM ca."${name}" ORDER BY 1`)).rows;
  return JSON.stringify(dump);
}

interface Case {
  rpc: string;
  allowed: Caller[];
  prepare(): Promise<(who: Caller) => Promise<unknown>>;
}

const ADMINS_OF_A: Caller[] = ["platform-admin", "cluster-admin of A", "enrollment", "registry"];
const revoke = (req: MessageInitShape<typeof RevokeRequestSchema>) => (who: Caller) => ca(who).revoke(req);
const principal = (kind: PrincipalKind, id: string) => ({
  target: { case: "principal" as const, value: { kind, id } },
});

const CASES: Case[] = [
  {
    rpc: "Sign(node of A)",
    allowed: ["enrollment"],
    prepare: async () => {
      const req = await signRequest({
        principalKind: PrincipalKind.NODE,
        principalId: fresh("n-a"),
        clusterId: "a",
      });
      return (who) => ca(who).sign(req);
    },
  },
  {
    rpc: "Sign(developer of X)",
    allowed: ["enrollment"],
    prepare: async () => {
      const req = await signRequest({
        principalKind: PrincipalKind.USER,
        principalId: fresh("dev"),
        organizationId: "x",
        grants: ["developer"],
      });
      return (who) => ca(who).sign(req);
    },
  },
  {
    rpc: "Sign(service registry)",
    allowed: ["registry"],
    prepare: async () => {
      const req = await signRequest({
        principalKind: PrincipalKind.SERVICE,
        principalId: "registry",
        grants: ["registry"],
      });
      return (who) => ca(who).sign(req);
    },
  },
  {
    rpc: "Sign(service router)",
    allowed: ["router"],
    prepare: async () => {
      const req = await signRequest({
        principalKind: PrincipalKind.SERVICE,
        principalId: "router",
        grants: ["router"],
      });
      return (who) => ca(who).sign(req);
    },
  },
  {
    rpc: "Revoke(serial of A)",
    allowed: ADMINS_OF_A,
    prepare: async () => revoke({ target: { case: "serial", value: await nodeIn("a") } }),
  },
  {
    rpc: "Revoke(serial of B)",
    allowed: ["platform-admin", "cluster-admin of B", "enrollment", "registry"],
    prepare: async () => revoke({ target: { case: "serial", value: await nodeIn("b") } }),
  },
  {
    rpc: "Revoke(serial of a developer of X)",
    allowed: ["platform-admin", "enrollment", "registry"],
    prepare: async () => {
      const serial = await issued({
        principalKind: PrincipalKind.USER,
        principalId: fresh("dev"),
        organizationId: "x",
        grants: ["developer"],
      });
      return revoke({ target: { case: "serial", value: serial } });
    },
  },
  {
    rpc: "Revoke(principal: node of A)",
    allowed: ADMINS_OF_A,
    prepare: async () => {
      const id = fresh("n-a");
      await nodeIn("a", id);
      return revoke(principal(PrincipalKind.NODE, id));
    },
  },
  {
    rpc: "Revoke(principal: node of B)",
    allowed: ["platform-admin", "cluster-admin of B", "enrollment", "registry"],
    prepare: async () => {
      const id = fresh("n-b");
      await nodeIn("b", id);
      return revoke(principal(PrincipalKind.NODE, id));
    },
  },
  {
    // Revokes nothing: the node has no certificate in B (a cluster-admin of B is told it is not found).
    rpc: "Revoke(principal: node of A, cluster B)",
    allowed: ["platform-admin", "enrollment", "registry"],
    prepare: async () => {
      const id = fresh("n-a");
      await nodeIn("a", id);
      return revoke({ ...principal(PrincipalKind.NODE, id), clusterId: "b" });
    },
  },
  {
    rpc: "Revoke(principal: developer of X)",
    allowed: ["platform-admin", "enrollment", "registry"],
    prepare: async () => {
      const id = fresh("dev");
      await issued({ principalKind: PrincipalKind.USER, principalId: id, organizationId: "x" });
      return revoke(principal(PrincipalKind.USER, id));
    },
  },
  {
    rpc: "Revoke(principal: the platform-admin)",
    allowed: ["platform-admin", "enrollment", "registry"],
    prepare: async () => {
      const id = fresh("root");
      await issued({ principalKind: PrincipalKind.ADMIN, principalId: id, grants: ["platform-admin"] });
      return revoke(principal(PrincipalKind.ADMIN, id));
    },
  },
  {
    rpc: "ListCertificates(cluster A)",
    allowed: ["platform-admin", "cluster-admin of A", "enrollment", "registry"],
    prepare: async () => (who) => ca(who).listCertificates({ clusterId: "a" }),
  },
  {
    rpc: "ListCertificates(cluster B)",
    allowed: ["platform-admin", "cluster-admin of B", "enrollment", "registry"],
    prepare: async () => (who) => ca(who).listCertificates({ clusterId: "b" }),
  },
];

describe("every id a CA request names is checked against the caller's scope", () => {
  it.each(CASES)("$rpc", async ({ allowed, prepare }) => {
    for (const caller of CALLERS) {
      const call = await prepare();
      const before = await storedState();
      let code: Code | "ok" = "ok";
      await call(caller).catch((err: { code?: Code }) => (code = err.code ?? Code.Unknown));
      if (allowed.includes(caller)) {
        expect(code, caller).toBe("ok");
        continue;
      }
      expect([Code.PermissionDenied, Code.NotFound], `${caller}: ${String(code)}`).toContain(code);
      expect(await storedState(), caller).toBe(before);
    }
  });

  it("shows a cluster-admin only its cluster's certificates, whatever principal or organization it filters by", async () => {
    const inB = fresh("n-b");
    await nodeIn("b", inB);
    await issued({ principalKind: PrincipalKind.USER, principalId: fresh("dev"), organizationId: "x" });
    await issued({
      principalKind: PrincipalKind.NODE,
      principalId: fresh("n-a"),
      clusterId: "a",
      organizationId: "x",
    });
    const asA = ca("cluster-admin of A");
    expect((await asA.listCertificates({ principalId: inB })).certificates).toEqual([]);
    const ofX = (await asA.listCertificates({ organizationId: "x" })).certificates;
    expect(ofX.length).toBeGreaterThan(0);
    expect(ofX.every((c) => c.clusterId === "a")).toBe(true);
    const users = (await asA.listCertificates({ principalKind: PrincipalKind.USER })).certificates;
    expect(users).toEqual([]);
  });
});
