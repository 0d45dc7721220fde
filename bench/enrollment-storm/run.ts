// Enrollment storm: 1,000 hosts join at once with one auto-approving token (each: a key and CSR made on
// the host, Join, WaitForApproval proving possession) — time until every one holds its identity. Baseline
// measured in the same run: the same number of certificates signed straight through the CA's Sign with
// the same concurrency (what enrollment must at least spend), so the ratio shows enrollment's own cost.
//
//   npm run bench:enrollment-storm -w @fabric/bench     BENCH_QUICK=1: 100 hosts
//   knobs: BENCH_HOSTS, BENCH_INFLIGHT (hosts enrolling at once, default 50)
import { performance } from "node:perf_hooks";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { CaService, SignRequestSchema } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { createRpcClient } from "@fabric/platform";
import type { Fabric } from "../../test/harness/fabric.js";
import { enrollHost, makeHosts } from "../../test/suites/support/storm.js";
import { runStandalone } from "../lib/fabric.js";
import { count, line, ms, quick, summarize } from "../lib/stats.js";

const HOSTS = Number(process.env.BENCH_HOSTS ?? (quick ? 100 : 1_000));
const IN_FLIGHT = Number(process.env.BENCH_INFLIGHT ?? 50);

/** Runs `tasks` with at most `limit` at once; resolves when all have settled. */
async function bounded<T>(tasks: (() => Promise<T>)[], limit: number): Promise<PromiseSettledResult<T>[]> {
  const results: PromiseSettledResult<T>[] = new Array(tasks.length);
  let next = 0;
  const lane = async () => {
    while (next < tasks.length) {
      const i = next++;
      try {
        results[i] = { status: "fulfilled", value: await tasks[i]!() };
      } catch (reason) {
        results[i] = { status: "rejected", reason };
      }
    }
  };
  await Promise.all(Array.from({ length: limit }, lane));
  return results;
}

export async function enrollmentStorm(fabric: Fabric): Promise<void> {
  console.log(
    `enrollment storm${quick ? " (quick)" : ""}: ${count(HOSTS)} hosts, ${IN_FLIGHT} enrolling at once`,
  );
  const cluster = `storm-${Date.now().toString(36)}`;
  await fabric
    .client(RegistryService, "registry")
    .createCluster({ clusterId: cluster, name: "Enrollment storm" });
  // A token allows at most 1,000 uses: one token per thousand hosts.
  const tokens: string[] = [];
  for (let i = 0; i < HOSTS; i += 1_000) {
    const created = await fabric.client(EnrollmentService, "enrollment").createJoinToken({
      clusterId: cluster,
      allowedRoles: ["relay-node"],
      maxUses: Math.min(HOSTS - i, 1_000),
      autoApprove: true,
    });
    tokens.push(created.token);
  }
  const hosts = await makeHosts(HOSTS);
  const enrollment = createRpcClient(EnrollmentService, {
    url: fabric.urls.enrollment!.grpc,
    credentials: { caBundlePem: fabric.admin.caBundlePem },
    expectServerId: `spiffe://${fabric.trustDomain}/service/enrollment`,
    retries: 0,
  });

  const startedAt = Date.now();
  const t0 = performance.now();
  const deadline = Date.now() + 600_000;
  const stormResults = await bounded(
    hosts.map(
      (h) => () =>
        enrollHost(enrollment, tokens[Math.floor(h.index / 1_000)]!, h, deadline, {
          clusterId: cluster,
          capabilities: ["can_route_mesh"],
        }),
    ),
    IN_FLIGHT,
  );
  const stormSeconds = (performance.now() - t0) / 1_000;
  const enrolled = hosts.filter((h) => h.identity).length;
  const failures: Record<string, number> = {};
  for (const h of hosts)
    for (const [code, n] of Object.entries(h.failures)) failures[code] = (failures[code] ?? 0) + n;
  const perHost = summarize(hosts.filter((h) => h.enrolledAt).map((h) => h.enrolledAt! - startedAt));
  const firstFailure = stormResults.find((r) => r.status === "rejected") as PromiseRejectedResult | undefined;

  // Baseline: the same number of certificates through the CA's Sign alone, same concurrency.
  const ca = createRpcClient(CaService, {
    url: fabric.urls.ca!.grpc,
    credentials: fabric.serviceIdentity("enrollment"),
    expectServerId: `spiffe://${fabric.trustDomain}/service/ca`,
    timeoutMs: 60_000,
  });
  const t1 = performance.now();
  await bounded(
    hosts.map(
      (h) => () =>
        ca.sign(
          create(SignRequestSchema, {
            csrPem: h.csrPem,
            principalKind: PrincipalKind.NODE,
            principalId: `storm-baseline-${h.index}`,
            clusterId: cluster,
            grants: ["relay-node"],
            authorizationRef: `bench/storm-baseline/${h.index}`,
          }),
        ),
    ),
    IN_FLIGHT,
  );
  const signSeconds = (performance.now() - t1) / 1_000;

  console.log(
    `all identities: ${count(enrolled)} of ${count(HOSTS)} hosts in ${stormSeconds.toFixed(1)} s (${count(enrolled / stormSeconds)}/s); time to identity p50 ${ms(perHost.p50)}, p99 ${ms(perHost.p99)}`,
  );
  console.log(`failures retried by the hosts: ${JSON.stringify(failures)}`);
  if (firstFailure) {
    const reason = firstFailure.reason as Error;
    console.log(
      `hosts that gave up: ${HOSTS - enrolled}, first: ${reason instanceof ConnectError ? Code[reason.code] : ""} ${reason.message}`,
    );
  }
  console.log(
    `baseline: ${count(HOSTS)} CA Sign calls in ${signSeconds.toFixed(1)} s (${count(HOSTS / signSeconds)}/s)`,
  );
  console.log(
    line(
      "enrollment storm",
      `${count(enrolled)} identities in ${stormSeconds.toFixed(1)} s`,
      undefined,
      "CA Sign alone for as many certificates",
      enrolled / stormSeconds / (HOSTS / signSeconds),
    ),
  );
}

await runStandalone(import.meta.url, enrollmentStorm);
