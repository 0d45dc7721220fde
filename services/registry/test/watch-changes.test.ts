import type { Client } from "@connectrpc/connect";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import type { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pruneChanges } from "../src/retention.js";
import { Code, eventually, refusal } from "./support/calls.js";
import { startRegistry, type RegistryFixture } from "./support/registry-fixture.js";
import { heartbeat, openSession } from "./support/sessions.js";
import { watch } from "./support/watcher.js";

let f: RegistryFixture;
let admin: Client<typeof RegistryService>;
let router: Client<typeof RegistryService>;
let enrollment: Client<typeof RegistryService>;
let n = 0;

const workload = (id: string, clusterId = "c1") => ({
  spec: {
    id,
    clusterId,
    role: "rdp-worker",
    runtime: Runtime.NATIVE,
    environment: Environment.DEV,
    command: "/bin/true",
  },
});

async function register(nodeId: string, clusterId = "c1") {
  await enrollment.registerNode({
    nodeId,
    clusterId,
    joinRequestId: `jr-${++n}`,
    capabilities: ["can_run_rdp_worker"],
    grantedRoles: ["rdp-worker"],
  });
}

beforeAll(async () => {
  f = await startRegistry();
  admin = f.client(f.admin);
  router = f.client(await f.pki.issue({ kind: "service", id: "router" }));
  enrollment = f.client(await f.pki.issue({ kind: "service", id: "enrollment" }));
  await admin.createCluster({ clusterId: "c1", name: "One" });
  await admin.createCluster({ clusterId: "c2", name: "Two" });
  await register("n-1");
  await register("n-2", "c2");
  await admin.putWorkload(workload("w-1"));
});
afterAll(async () => {
  await f?.close();
});

describe("WatchChanges", () => {
  it("lists the state at a version, then streams each later change in version order", async () => {
    const w = watch(router);
    const synced = await w.synced();
    const list = w.messages.filter((m) => m.event.case === "list");
    expect(list[0]?.event.value).toMatchObject({ reset: true, resumeExpired: false, version: synced });
    const listed = list.flatMap((m) => (m.event.case === "list" ? m.event.value.events : []));
    expect(listed.map((e) => e.entity.case).sort()).toEqual(
      ["membership", "membership", "node", "node", "roleAssignment", "roleAssignment", "workload"].sort(),
    );
    expect(listed.every((e) => e.version > 0n && e.version <= synced)).toBe(true);
    // nothing internal (clusters, catalog) reaches the router
    expect(listed.some((e) => e.entity.case === undefined)).toBe(false);

    await admin.putWorkload(workload("w-2"));
    const m = (await admin.listMemberships({ nodeId: "n-1" })).memberships[0]!;
    await admin.disableMembership({ membershipId: m.id, reason: "maintenance" });
    await w.waitFor((c) => c.entity.case === "membership" && c.entity.value.id === m.id);
    const versions = w.changes.map((c) => c.version);
    expect(versions.every((v) => v > synced)).toBe(true);
    expect(versions).toEqual([...versions].sort((a, b) => (a < b ? -1 : 1)));
    expect(new Set(versions).size).toBe(versions.length);
    expect(w.changes.map((c) => c.entity.case)).toEqual(
      expect.arrayContaining(["workload", "membership", "node"]),
    );
    await admin.enableMembership({ membershipId: m.id });
    await w.stop();
  });

  it("filters by cluster: nodes come with their memberships' clusters", async () => {
    const w = watch(router, { clusterIds: ["c2"] });
    await w.synced();
    const listed = w.messages.flatMap((m) => (m.event.case === "list" ? m.event.value.events : []));
    expect(
      listed.filter((e) => e.entity.case === "node").map((e) => (e.entity.value as { id: string }).id),
    ).toEqual(["n-2"]);
    await admin.putWorkload(workload("w-c1-only"));
    await admin.putWorkload(workload("w-c2", "c2"));
    const change = await w.waitFor((c) => c.entity.case === "workload");
    expect(change.entity.case === "workload" && change.entity.value.spec?.id).toBe("w-c2");
    expect(
      w.changes.some((c) => c.entity.case === "workload" && c.entity.value.spec?.id === "w-c1-only"),
    ).toBe(false);
    await w.stop();
  });

  it("resumes from a version with exactly the changes after it, across a registry restart", async () => {
    const first = watch(router);
    await first.synced();
    await admin.putWorkload(workload("w-before-stop"));
    await first.waitFor((c) => c.entity.case === "workload" && c.entity.value.spec?.id === "w-before-stop");
    const held = first.version();
    await first.stop();

    // Changes the watcher does not see: one before the restart, one after (from a fresh process's memory,
    // which does not reach back that far, so the replay comes from the changes table).
    await admin.deleteWorkload({ workloadId: "w-before-stop" });
    await f.restart();
    router = f.client(await f.pki.issue({ kind: "service", id: "router" }));
    admin = f.client(f.admin);
    await admin.putWorkload(workload("w-after-restart"));
    const expected = (
      await f.pool.query<{ version: string }>(
        `SELECT version::text FROM changes WHERE version > $1 AND kind IN ('node','membership','role_assignment','workload','egress_pool','probe_stats') ORDER BY version`,
        [held.toString()],
      )
    ).rows.map((r) => BigInt(r.version));

    const resumed = watch(router, { resumeFromVersion: held });
    await resumed.synced();
    expect(resumed.messages.some((m) => m.event.case === "list")).toBe(false);
    expect(resumed.changes.map((c) => c.version)).toEqual(expected);
    const kinds = resumed.changes.map((c) => `${c.entity.case}${c.deleted ? ":deleted" : ""}`);
    expect(kinds).toEqual(["workload:deleted", "workload"]);
    await resumed.stop();
  });

  it("relists, flagged, when the version to resume from was pruned", async () => {
    const w = watch(router);
    const held = await w.synced();
    await w.stop();
    await admin.putWorkload(workload("w-pruned"));
    expect(await pruneChanges(f.pool, 0)).toBeGreaterThan(0);
    // A fresh process: its memory does not reach back to `held` either (a live one would replay from it).
    await f.restart();
    router = f.client(await f.pki.issue({ kind: "service", id: "router" }));
    admin = f.client(f.admin);
    const resumed = watch(router, { resumeFromVersion: held });
    const synced = await resumed.synced();
    const first = resumed.messages[0]!;
    expect(first.event.case).toBe("list");
    expect(first.event.value).toMatchObject({ reset: true, resumeExpired: true, version: synced });
    const listed = resumed.messages.flatMap((m) => (m.event.case === "list" ? m.event.value.events : []));
    expect(listed.some((e) => e.entity.case === "workload" && e.entity.value.spec?.id === "w-pruned")).toBe(
      true,
    );
    await resumed.stop();
  });

  it("carries node online state and coalesced load from sessions", async () => {
    const w = watch(router, { clusterIds: ["c1"] });
    await w.synced();
    const session = openSession(f.client(await f.pki.issue({ kind: "node", id: "n-1", cluster: "c1" })));
    await session.waitAcked(session.send(heartbeat()));
    const online = await w.waitFor((c) => c.entity.case === "node" && c.entity.value.online);
    expect(online.entity.value).toMatchObject({ id: "n-1", online: true });
    // load-only heartbeats inside the coalescing window add no feed entries
    const before = w.changes.length;
    let last = 0n;
    for (let i = 0; i < 20; i++) last = session.send(heartbeat({ cpuRatio: i / 40 }));
    await session.waitAcked(last);
    await new Promise((r) => setTimeout(r, 200));
    expect(w.changes.length).toBe(before);
    await session.close();
    await w.stop();
  });
});

describe("authority", () => {
  it("refuses changes with Unavailable on a read-only database while reads and watches keep working", async () => {
    const w = watch(router);
    await w.synced();
    const superuser = new pg.Client({ connectionString: f.db.url });
    await superuser.connect();
    try {
      await superuser.query(`ALTER DATABASE "${f.db.name}" SET default_transaction_read_only = on`);
      // Sessions pick the setting up when they connect: end the registry's current ones.
      await superuser.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        [f.db.name],
      );
      const err = await eventually(async () => {
        const e = await refusal(admin.createCluster({ clusterId: "c-ro", name: "read only" }));
        return /read-only/.test(e.rawMessage) ? e : undefined;
      });
      expect(err.code).toBe(Code.Unavailable);
      expect(err.rawMessage).toMatch(/the registry cannot take changes now \(its database is read-only/);
      expect(err.rawMessage).toMatch(/Reads and watches keep serving the last known state/);
      // reads are served from memory
      expect((await admin.listClusters({})).clusters.map((c) => c.id)).toEqual(["c1", "c2"]);
      expect((await admin.getNode({ nodeId: "n-1" })).node?.id).toBe("n-1");
      // a new watcher still gets the full list
      const late = watch(router);
      await late.synced();
      await late.stop();
    } finally {
      await superuser.query(`ALTER DATABASE "${f.db.name}" RESET default_transaction_read_only`);
      await superuser.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        [f.db.name],
      );
      await superuser.end();
    }
    // the authority is back: the change goes through and reaches the open watcher
    await eventually(
      async () =>
        (await admin.createCluster({ clusterId: "c-back", name: "back" }).catch(() => undefined)) ??
        undefined,
    );
    await admin.putWorkload(workload("w-back"));
    await w.waitFor((c) => c.entity.case === "workload" && c.entity.value.spec?.id === "w-back");
    expect(await w.stop()).toBeUndefined();
  });
});
