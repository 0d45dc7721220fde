import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { WorkloadSpecSchema, type WorkloadSpec } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import type { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { FabricError } from "@fabric/platform";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { validateWorkloadSpec } from "../src/workload-rules.js";
import { Code, refusal } from "./support/calls.js";
import { startRegistry, type RegistryFixture } from "./support/registry-fixture.js";

const DIGEST = `sha256:${"0123456789abcdef".repeat(4)}`;

type SpecInit = MessageInitShape<typeof WorkloadSpecSchema>;

function spec(init: Partial<Record<keyof SpecInit, unknown>>): WorkloadSpec {
  const defaults = {
    id: "w1",
    clusterId: "c1",
    role: "rdp-worker",
    runtime: Runtime.CONTAINER,
    environment: Environment.DEV,
  };
  return create(WorkloadSpecSchema, { ...defaults, ...init } as SpecInit);
}

/** The InvalidArgument message the spec is refused with. */
function refusedWith(s: WorkloadSpec): string {
  try {
    validateWorkloadSpec(s);
  } catch (err) {
    expect(err).toBeInstanceOf(FabricError);
    expect((err as FabricError).kind).toBe("invalid-argument");
    return (err as Error).message;
  }
  throw new Error("the spec was accepted but should have been refused");
}

describe("environment guard rules", () => {
  it("lets dev mount, sync and reload, with or without an image", () => {
    expect(() =>
      validateWorkloadSpec(
        spec({
          mounts: [{ source: "/src", target: "/app" }],
          sync: { sourcePath: "/home/dev/app", targetPath: "/srv/app" },
          reload: true,
        }),
      ),
    ).not.toThrow();
    expect(() => validateWorkloadSpec(spec({ image: "app:latest" }))).not.toThrow();
  });

  it("needs an image in tst and pro", () => {
    expect(refusedWith(spec({ environment: Environment.TST }))).toMatch(
      /guard rule: tst workloads run an immutable image; set spec.image/,
    );
    expect(refusedWith(spec({ environment: Environment.PRO }))).toMatch(
      /guard rule: pro workloads run an immutable image/,
    );
  });

  it("needs pro images pinned by digest", () => {
    expect(refusedWith(spec({ environment: Environment.PRO, image: "registry.example/app:1.2" }))).toMatch(
      /guard rule: pro images must be pinned by digest/,
    );
    expect(
      refusedWith(spec({ environment: Environment.PRO, image: `app@sha256:${"A".repeat(64)}` })),
    ).toMatch(/pinned by digest/);
    expect(() =>
      validateWorkloadSpec(spec({ environment: Environment.PRO, image: `registry.example/app@${DIGEST}` })),
    ).not.toThrow();
    expect(() =>
      validateWorkloadSpec(spec({ environment: Environment.TST, image: "app:1.2" })),
    ).not.toThrow();
  });

  it("refuses mounts, sync and reload outside dev", () => {
    for (const environment of [Environment.TST, Environment.PRO]) {
      const base = { environment, image: `app@${DIGEST}` };
      expect(refusedWith(spec({ ...base, mounts: [{ source: "/src", target: "/app" }] }))).toMatch(
        /guard rule: mounts are only allowed in dev/,
      );
      expect(refusedWith(spec({ ...base, sync: { targetPath: "/srv" } }))).toMatch(
        /guard rule: sync is only allowed in dev/,
      );
      expect(refusedWith(spec({ ...base, reload: true }))).toMatch(
        /guard rule: reload is only allowed in dev/,
      );
    }
  });
});

describe("well-formed specs", () => {
  it("names the field at fault", () => {
    expect(refusedWith(spec({ runtime: Runtime.UNSPECIFIED }))).toMatch(/spec.runtime is required/);
    expect(refusedWith(spec({ environment: Environment.UNSPECIFIED }))).toMatch(
      /spec.environment is required/,
    );
    expect(refusedWith(spec({ runtime: Runtime.NATIVE }))).toMatch(
      /spec.command is required for RUNTIME_NATIVE/,
    );
    expect(refusedWith(spec({ id: "Bad_Id" }))).toMatch(/spec.id must be/);
    expect(refusedWith(spec({ env: { DB_PASSWORD: "x" } }))).toMatch(/looks like a secret/);
    expect(refusedWith(spec({ env: { "1X": "x" } }))).toMatch(/not a valid variable name/);
    expect(refusedWith(spec({ healthCheck: {} }))).toMatch(/exactly one probe/);
    expect(
      refusedWith(
        spec({ healthCheck: { probe: { case: "tcp", value: { port: 80 } }, interval: durationFromMs(500) } }),
      ),
    ).toMatch(/interval must be at least 1 s/);
    expect(
      refusedWith(
        spec({
          healthCheck: {
            probe: { case: "http", value: { port: 80 } },
            interval: durationFromMs(2_000),
            timeout: durationFromMs(2_000),
          },
        }),
      ),
    ).toMatch(/timeout must be positive and shorter/);
    expect(refusedWith(spec({ stopGracePeriod: durationFromMs(10 * 60_000) }))).toMatch(/stop_grace_period/);
    expect(refusedWith(spec({ nodeIds: ["n-1", "n-1"] }))).toMatch(/twice/);
  });
});

describe("PutWorkload enforces the rules and changes nothing when refusing", () => {
  let f: RegistryFixture;
  let admin: Client<typeof RegistryService>;
  beforeAll(async () => {
    f = await startRegistry();
    admin = f.client(f.admin);
    await admin.createCluster({ clusterId: "c1", name: "One" });
  });
  afterAll(async () => {
    await f?.close();
  });

  it("refuses a tst workload with a mount and a pro workload without a digest", async () => {
    const auditBefore = (await admin.verifyAudit({})).rowsChecked;
    const tst = await refusal(
      admin.putWorkload({
        spec: spec({
          environment: Environment.TST,
          image: "app:1",
          mounts: [{ source: "/src", target: "/app" }],
        }),
      }),
    );
    expect(tst.code).toBe(Code.InvalidArgument);
    expect(tst.rawMessage).toMatch(/guard rule: mounts are only allowed in dev/);
    const pro = await refusal(
      admin.putWorkload({ spec: spec({ environment: Environment.PRO, image: "app:1" }) }),
    );
    expect(pro.code).toBe(Code.InvalidArgument);
    expect(pro.rawMessage).toMatch(/pinned by digest/);
    expect((await admin.listWorkloads({})).workloads).toEqual([]);
    const rows = await f.pool.query("SELECT count(*)::int AS n FROM workloads");
    expect(rows.rows[0].n).toBe(0);
    // the refusals themselves are audited as failed attempts
    const failed = await admin.listAudit({ actionPrefix: "workload.put" });
    expect(failed.events.map((e) => e.details.error)).toEqual(["invalid-argument", "invalid-argument"]);
    expect((await admin.verifyAudit({})).rowsChecked).toBe(auditBefore + 2n);
    const ok = await admin.putWorkload({
      spec: spec({ environment: Environment.PRO, image: `app@${DIGEST}` }),
    });
    expect(ok.created).toBe(true);
  });
});
