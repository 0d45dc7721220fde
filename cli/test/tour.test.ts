// The README's five-minute tour, as a user types it: `fabric up` (on a fresh test database, through
// DATABASE_URL), then the spawned `fabric` CLI and `fabric-agent`: token → enroll → approve → assign a
// role → a native workload runs and answers HTTP → revoke → the agent stops. Around it, what each
// workflow refuses: another principal (a node), bad input (nothing changes), a wrong key fingerprint.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createTestDatabase, freePort, type TestDatabase } from "@fabric/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnAgent, waitFor, type AgentProcess } from "./fixtures/agent.js";
import { freePortOffset, startUp, type RunningUp } from "./fixtures/fabric-up.js";
import { runFabric } from "./fixtures/run-fabric.js";

const scratch = mkdtempSync(join(tmpdir(), "fabric-tour-"));
const home = join(scratch, "home");
const agentHome = join(scratch, "agent");
let db: TestDatabase;
let up: RunningUp;
let agent: AgentProcess | undefined;

beforeAll(async () => {
  db = await createTestDatabase("tour");
  up = await startUp({ home, offset: await freePortOffset(), env: { DATABASE_URL: db.url } });
}, 180_000);

afterAll(async () => {
  await agent?.stop();
  await up?.stop();
  await db?.drop();
  rmSync(scratch, { recursive: true, force: true });
});

const fabric = async (...args: string[]) => {
  const run = await runFabric(args, { home });
  return { ...run, json: () => JSON.parse(run.stdout) };
};

/** The README's workload: a node one-liner serving HTTP. */
const helloServer = (port: number) =>
  `require("http").createServer((q, r) => r.end("hello from fabric\\n")).listen(${port})`;

const enrollArgs = (name: string, extra: string[] = []) => [
  "enroll",
  "--server",
  up.summary.services.enrollment.grpc,
  "--ca-bundle",
  up.summary.caBundle,
  "--name",
  name,
  "--capabilities",
  "can_route_mesh",
  "--registry-url",
  up.summary.services.registry.grpc,
  "--router-url",
  up.summary.services.router.grpc,
  ...extra,
];

describe("the five-minute tour", () => {
  it(
    "token → enroll → approve → role → workload answers → revoke → the agent stops",
    { timeout: 360_000 },
    async () => {
      // 1. A join token (shown once).
      const token = await fabric("token", "create", "--description", "tour");
      expect(token.code, token.stderr).toBe(0);
      const { token: secret, joinToken } = token.json();
      expect(secret).toMatch(new RegExp(`^${joinToken.id}\\.`));
      expect(joinToken).toMatchObject({ clusterId: "default", maxUses: 1, state: "JOIN_TOKEN_STATE_ACTIVE" });

      // 2. The node enrolls with it: key made on the host, the request waits for an admin.
      const enroll = spawnAgent(enrollArgs("edge-1"), {
        FABRIC_AGENT_HOME: agentHome,
        FABRIC_JOIN_TOKEN: secret,
      });
      const pending = await fabric("join", "ls", "--wait");
      expect(pending.code, pending.stderr).toBe(0);
      const [request] = pending.json().joinRequests;
      expect(request).toMatchObject({
        state: "JOIN_REQUEST_STATE_PENDING",
        clusterId: "default",
        nodeName: "edge-1",
        capabilities: ["can_route_mesh"],
        tokenId: joinToken.id,
      });
      expect(request.facts.hostname).not.toBe("");
      const printed = await waitFor(
        "the agent's key fingerprint",
        () => /Public key SHA-256: ([0-9a-f]{64})/.exec(enroll.output())?.[1],
      );
      expect(printed).toBe(request.publicKeySha256);

      // 3. Approval checks the fingerprint first: a wrong one approves nothing.
      const wrongKey = await fabric("join", "approve", request.id, "--key-sha256", "0".repeat(64));
      expect(wrongKey.code).toBe(6);
      expect(wrongKey.stderr).toContain("not approved");
      const stillPending = await fabric("join", "show", request.id);
      expect(stillPending.json().state).toBe("JOIN_REQUEST_STATE_PENDING");
      const approve = await fabric("join", "approve", request.id, "--key-sha256", printed!);
      expect(approve.code, approve.stderr).toBe(0);
      const nodeId = approve.json().nodeId as string;
      expect(nodeId).not.toBe("");
      expect(await enroll.exited).toBe(0);
      expect(enroll.output()).not.toContain(secret.split(".")[1]);

      // The node's own identity may not run admin workflows; the refusal is exit 3 with the reason.
      const asNode = await runFabric(["--identity", join(agentHome, "identity"), "token", "create"], {
        home,
      });
      expect(asNode.code).toBe(3);
      expect(asNode.stderr).toMatch(
        /PermissionDenied: node "[^"]+" may not call fabric\.enrollment\.v1\.EnrollmentService\/CreateJoinToken/,
      );

      // 4. A role: refused without the capability it needs, granted with it.
      const [egress, relay] = await Promise.all([
        fabric("role", "assign", nodeId, "egress-node"),
        fabric("role", "assign", nodeId, "relay-node"),
      ]);
      expect(egress.code).toBe(6);
      expect(egress.stderr).toContain("FailedPrecondition");
      expect(relay.code, relay.stderr).toBe(0);
      expect(relay.json()).toMatchObject({ nodeId, role: "relay-node", clusterId: "default" });

      // 5. A native workload for the role; bad input is refused and stores nothing.
      const port = await freePort();
      const [workload, pro] = await Promise.all([
        fabric(
          "workload",
          "set",
          "hello",
          "--role",
          "relay-node",
          "--health-http",
          `${port}/`,
          "--",
          "node",
          "-e",
          helloServer(port),
        ),
        // pro needs a digest-pinned image
        fabric(
          "workload",
          "set",
          "bad",
          "--role",
          "relay-node",
          "--runtime",
          "container",
          "--environment",
          "pro",
          "--image",
          "nginx:latest",
        ),
      ]);
      expect(workload.code, workload.stderr).toBe(0);
      expect(workload.json()).toMatchObject({ created: true, workload: { generation: "1" } });
      expect(pro.code).toBe(2);
      expect(pro.stderr).toContain("InvalidArgument");

      // 6. The agent runs it, from its verified snapshot; it answers.
      agent = spawnAgent(["run"], { FABRIC_AGENT_HOME: agentHome, FABRIC_HEARTBEAT_INTERVAL_MS: "1000" });
      const answer = await waitFor(
        "the workload to answer",
        () =>
          fetch(`http://127.0.0.1:${port}/`).then(
            (r) => r.text(),
            () => "",
          ),
        90_000,
      );
      expect(answer).toBe("hello from fabric\n");
      const listed = await waitFor("the workload reported healthy", async () => {
        const ls = await fabric("workload", "ls");
        const hello = ls.json().workloads.find((w: { spec: { id: string } }) => w.spec.id === "hello");
        return hello?.statuses.some((s: { state: string }) => s.state === "WORKLOAD_STATE_HEALTHY") && ls;
      });
      expect(listed.json().workloads.map((w: { spec: { id: string } }) => w.spec.id)).toEqual(["hello"]);
      const shown = await fabric("node", "show", nodeId);
      expect(shown.code, shown.stderr).toBe(0);
      expect(shown.json().node).toMatchObject({
        id: nodeId,
        name: "edge-1",
        online: true,
        state: "NODE_STATE_ACTIVE",
      });
      expect(shown.json().node.memberships[0].roles).toEqual(["relay-node"]);

      // 7. Revoked: its streams are cut, the agent stops its workload and exits asking to re-enroll.
      const revoke = await fabric("node", "revoke", nodeId, "--comment", "tour done");
      expect(revoke.code, revoke.stderr).toBe(0);
      expect(revoke.json().revokedSerials.length).toBeGreaterThan(0);
      expect(await agent.exited).toBe(10);
      agent = undefined;
      const down = await fetch(`http://127.0.0.1:${port}/`).then(
        () => false,
        () => true,
      );
      expect(down).toBe(true);
      const nodes = await fabric("node", "ls");
      expect(nodes.json().nodes).toEqual([
        expect.objectContaining({ id: nodeId, state: "NODE_STATE_REVOKED" }),
      ]);

      // Everything above is in the audit log, and its hash chain holds.
      const [audit, verify] = await Promise.all([
        fabric("audit", "ls", "--action", "node.revoke"),
        fabric("audit", "verify"),
      ]);
      expect(audit.json().events.map((e: { targetId: string }) => e.targetId)).toContain(nodeId);
      expect(verify.code, verify.stderr).toBe(0);
      expect(verify.json().ok).toBe(true);
    },
  );

  it(
    "shows what a node asked for next to what its token allows, and rejects it with a reason",
    { timeout: 180_000 },
    async () => {
      const token = await fabric("token", "create", "--roles", "relay-node,entry-node", "--uses", "2");
      expect(token.code, token.stderr).toBe(0);
      const { token: secret, joinToken } = token.json();
      const enroll = spawnAgent(enrollArgs("edge-2", ["--roles", "relay-node"]), {
        FABRIC_AGENT_HOME: join(scratch, "agent-2"),
        FABRIC_JOIN_TOKEN: secret,
      });
      const pending = await fabric("join", "ls", "--wait", "--state", "pending");
      const [request] = pending.json().joinRequests;
      expect(request.requestedRoles).toEqual(["relay-node"]);
      expect([...request.allowedRoles].sort()).toEqual(["entry-node", "relay-node"]);
      const table = await runFabric(["join", "ls", "-o", "table"], { home });
      expect(table.stdout).toMatch(
        /^ID +STATE +CLUSTER +NAME +HOST +OS +ARCH +CAPABILITIES +REQUESTED +ALLOWED /m,
      );
      expect(table.stdout).toMatch(
        /pending +default +edge-2 .* can_route_mesh +relay-node +(entry-node,relay-node|relay-node,entry-node) /,
      );

      const noReason = await fabric("join", "reject", request.id);
      expect(noReason.code).toBe(2);
      const reject = await fabric("join", "reject", request.id, "--reason", "not one of ours");
      expect(reject.code, reject.stderr).toBe(0);
      expect(reject.json()).toMatchObject({
        state: "JOIN_REQUEST_STATE_REJECTED",
        rejectionReason: "not one of ours",
      });
      expect(await enroll.exited).toBe(3);
      expect(enroll.output()).toContain("not one of ours");

      // Token bookkeeping: a bad TTL creates nothing; a full token is never sent to revoke; revoke works.
      const [tooLong, fullToken] = await Promise.all([
        fabric("token", "create", "--ttl", "48h"),
        fabric("token", "revoke", secret),
      ]);
      expect(tooLong.code).toBe(2);
      expect(tooLong.stderr).toContain("InvalidArgument");
      expect(fullToken.code).toBe(2);
      expect(fullToken.stderr).not.toContain(secret.split(".")[1]);
      const revoked = await fabric("token", "revoke", joinToken.id);
      expect(revoked.code, revoked.stderr).toBe(0);
      const tokens = await fabric("token", "ls");
      expect(tokens.json().joinTokens).toHaveLength(2);
      expect(tokens.json().joinTokens.find((t: { id: string }) => t.id === joinToken.id)).toMatchObject({
        state: "JOIN_TOKEN_STATE_REVOKED",
        uses: 1,
      });
    },
  );

  it("shows the local CA with its inventory counts from the running fabric up", async () => {
    const status = await fabric("ca", "status");
    expect(status.code, status.stderr).toBe(0);
    const doc = status.json();
    expect(doc.trustDomain).toBe("fabric.local");
    expect(doc.root.fingerprintSha256).toBe(up.summary.rootFingerprintSha256);
    expect(doc.root.keyPresent).toBe(true);
    expect(doc.rootCertificate).toBe(up.summary.caBundle);
    expect(doc.counts.revoked).toBeGreaterThanOrEqual(1);
  });
});
