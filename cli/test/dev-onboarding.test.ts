// Developer onboarding against a real `fabric up`: an admin issues a PIN, a developer's machine (its own
// FABRIC_HOME) runs `fabric dev init` with it and gets a user identity and a context. Impostors (a MAC
// that does not match the PIN, a server outside the bundle it returns, a root other than the pinned
// one) are refused with nothing saved. Short user-certificate lifetimes (an enrollment setting passed
// through `fabric up`) exercise the CLI's warn / renew / block thresholds against the real services.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RpcServer } from "@fabric/platform";
import { createTestDatabase, createTestPki, type TestDatabase } from "@fabric/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { startImpostor } from "./fixtures/fake-enrollment.js";
import { freePortOffset, startUp, type RunningUp } from "./fixtures/fabric-up.js";
import { runFabric } from "./fixtures/run-fabric.js";

/** Developer certificates live this long, so expiry is reached within the test. */
const USER_LIFETIME_MS = 30_000;

const scratch = mkdtempSync(join(tmpdir(), "fabric-dev-"));
const adminHome = join(scratch, "admin");
let db: TestDatabase;
let up: RunningUp;
const impostors: RpcServer[] = [];

beforeAll(async () => {
  db = await createTestDatabase("devonboard");
  up = await startUp({
    home: adminHome,
    offset: await freePortOffset(),
    env: { DATABASE_URL: db.url, FABRIC_USER_CERTIFICATE_LIFETIME_MS: String(USER_LIFETIME_MS) },
  });
}, 180_000);

afterAll(async () => {
  await Promise.all(impostors.map((s) => s.close()));
  await up?.stop();
  await db?.drop();
  rmSync(scratch, { recursive: true, force: true });
});

const asAdmin = (...args: string[]) => runFabric(args, { home: adminHome });

async function issuePin(
  developerId: string,
): Promise<{ pin: string; command: string[]; caFingerprintSha256: string }> {
  const res = await asAdmin("dev", "pin", developerId);
  expect(res.code, res.stderr).toBe(0);
  const doc = JSON.parse(res.stdout);
  // The command the admin hands over, as words after `fabric`.
  return { ...doc, command: (doc.command as string).split(" ").slice(1) };
}

const enrollmentUrl = () => up.summary.services.enrollment.grpc;

describe("fabric dev pin → fabric dev init", () => {
  it(
    "onboards a developer machine: identity, context, and whoami shows the user",
    { timeout: 120_000 },
    async () => {
      const devHome = join(scratch, "dev-a");
      const { pin, command, caFingerprintSha256 } = await issuePin("dev01");
      expect(pin).toMatch(/^\d{6}$/);
      expect(caFingerprintSha256).toBe(up.summary.rootFingerprintSha256);
      expect(command).toEqual([
        "dev",
        "init",
        "--dev-id",
        "dev01",
        "--server",
        enrollmentUrl(),
        "--pin",
        pin,
        "--ca-fingerprint",
        caFingerprintSha256,
      ]);

      // A wrong PIN is refused by the server; nothing is written.
      const wrong = await runFabric(
        [
          "dev",
          "init",
          "--dev-id",
          "dev01",
          "--server",
          enrollmentUrl(),
          "--pin",
          pin === "000000" ? "111111" : "000000",
        ],
        { home: devHome },
      );
      expect(wrong.code).toBe(3);
      expect(wrong.stderr).toContain("Unauthenticated: wrong developer id or PIN");
      expect(existsSync(devHome)).toBe(false);

      const init = await runFabric(command, { home: devHome });
      expect(init.code, init.stderr).toBe(0);
      const result = JSON.parse(init.stdout);
      expect(result).toMatchObject({
        developerId: "dev01",
        identityDir: join(devHome, "certs", "dev01"),
        spiffeId: "spiffe://fabric.local/user/dev01",
        context: "fabric.local",
        caFingerprintsSha256: [up.summary.rootFingerprintSha256],
      });
      expect(statSync(join(devHome, "certs", "dev01", "key.pem")).mode & 0o777).toBe(0o600);
      const config = parseYaml(readFileSync(join(devHome, "config.yaml"), "utf8"));
      expect(config["current-context"]).toBe("fabric.local");
      expect(config.contexts["fabric.local"]).toEqual({
        "trust-domain": "fabric.local",
        identity: "dev01",
        servers: Object.fromEntries(Object.entries(up.summary.services).map(([name, e]) => [name, e.grpc])),
      });

      const whoami = await runFabric(["whoami"], { home: devHome });
      expect(whoami.code, whoami.stderr).toBe(0);
      expect(JSON.parse(whoami.stdout)).toMatchObject({
        context: "fabric.local",
        id: "dev01",
        kind: "user",
        spiffeId: "spiffe://fabric.local/user/dev01",
        grant: "developer",
        expired: false,
      });

      // The PIN worked once; a developer may use what users may, and not what admins may.
      const [again, bundle, adminOnly] = await Promise.all([
        runFabric(command, { home: join(scratch, "dev-a-again") }),
        runFabric(["ca", "get-trust-bundle"], { home: devHome }),
        runFabric(["dev", "pin", "dev02"], { home: devHome }),
      ]);
      expect(again.code).toBe(6);
      expect(again.stderr).toContain("FailedPrecondition: this PIN was already used");
      expect(bundle.code, bundle.stderr).toBe(0);
      expect(adminOnly.code).toBe(3);
      expect(adminOnly.stderr).toMatch(
        /PermissionDenied: user "dev01" may not call fabric\.enrollment\.v1\.EnrollmentService\/IssueDeveloperPin/,
      );
    },
  );

  it(
    "refuses impostors — a MAC that does not match the PIN, a server outside the bundle, an unpinned root — saving nothing",
    { timeout: 120_000 },
    async () => {
      const pin = "424242";
      const [ours, theirs] = await Promise.all([
        createTestPki("fabric.local"),
        createTestPki("fabric.local"),
      ]);
      const wrongMac = await startImpostor({ kind: "wrong-mac", pin, serverPki: ours, bundlePki: ours });
      const foreign = await startImpostor({
        kind: "foreign-server-certificate",
        pin,
        serverPki: ours,
        bundlePki: theirs,
      });
      impostors.push(wrongMac, foreign);
      const homes = [join(scratch, "impostor-1"), join(scratch, "impostor-2"), join(scratch, "impostor-3")];
      const real = await issuePin("dev03");
      const [macRun, foreignRun, pinnedRun] = await Promise.all([
        runFabric(["dev", "init", "--dev-id", "dev03", "--server", wrongMac.grpcUrl, "--pin", pin], {
          home: homes[0],
        }),
        runFabric(["dev", "init", "--dev-id", "dev03", "--server", foreign.grpcUrl, "--pin", pin], {
          home: homes[1],
        }),
        // The real server, but a root fingerprint that is not its own.
        runFabric(
          [
            "dev",
            "init",
            "--dev-id",
            "dev03",
            "--server",
            enrollmentUrl(),
            "--pin",
            real.pin,
            "--ca-fingerprint",
            "ab".repeat(32),
          ],
          { home: homes[2] },
        ),
      ]);
      expect(macRun.code).toBe(5);
      expect(macRun.stderr).toContain(
        "REFUSED: the CA bundle the server returned does not carry the MAC keyed by your PIN",
      );
      expect(foreignRun.code).toBe(5);
      expect(foreignRun.stderr).toContain(
        "REFUSED: the server's certificate does not chain to the CA bundle it returned",
      );
      expect(pinnedRun.code).toBe(5);
      expect(pinnedRun.stderr).toContain(
        "REFUSED: the CA bundle does not contain the root --ca-fingerprint names",
      );
      for (const [i, run] of [macRun, foreignRun, pinnedRun].entries()) {
        expect(run.stderr).toContain("Nothing was saved");
        expect(run.stderr).not.toContain(i === 2 ? real.pin : pin);
        expect(existsSync(join(homes[i]!, "certs")), homes[i]).toBe(false);
        expect(existsSync(join(homes[i]!, "config.yaml")), homes[i]).toBe(false);
      }
    },
  );

  it(
    "warns, renews and finally blocks a developer identity by its expiry, against the real services",
    { timeout: 180_000 },
    async () => {
      const devHome = join(scratch, "dev-expiry");
      const { command } = await issuePin("dev04");
      const init = await runFabric(command, { home: devHome });
      expect(init.code, init.stderr).toBe(0);
      const issued = JSON.parse(init.stdout);
      expect(Date.parse(issued.notAfter) - Date.now()).toBeLessThanOrEqual(USER_LIFETIME_MS);

      // Under the warning threshold (a day), above the renewal one (0): a warning, nothing else.
      const warned = await runFabric(["whoami"], {
        home: devHome,
        env: { FABRIC_CLI_WARN_DAYS: "1", FABRIC_CLI_RENEW_DAYS: "0" },
      });
      expect(warned.code, warned.stderr).toBe(0);
      expect(warned.stderr).toMatch(/^warning: your identity user "dev04" expires in 0\.0 days/m);
      expect(JSON.parse(warned.stdout).serial).toBe(issued.serial);

      // Under the renewal threshold: renewed through Renew with a new key before the command runs.
      const renewed = await runFabric(["ca", "get-trust-bundle"], {
        home: devHome,
        env: { FABRIC_CLI_RENEW_DAYS: "1" },
      });
      expect(renewed.code, renewed.stderr).toBe(0);
      expect(renewed.stderr).toMatch(
        /^renewed identity user "dev04": new certificate [0-9a-f]+ valid until /m,
      );
      const after = JSON.parse(
        (await runFabric(["whoami"], { home: devHome, env: { FABRIC_CLI_RENEW_DAYS: "0" } })).stdout,
      );
      expect(after.serial).not.toBe(issued.serial);
      expect(after.spiffeId).toBe("spiffe://fabric.local/user/dev04");

      // Expired: commands are refused with the way back; whoami still reports it.
      await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(after.notAfter) - Date.now() + 1_500)));
      const [blocked, reported] = await Promise.all([
        runFabric(["ca", "get-trust-bundle"], { home: devHome }),
        runFabric(["whoami"], { home: devHome }),
      ]);
      expect(blocked.code).toBe(3);
      expect(blocked.stderr).toMatch(
        /^error: your identity user "dev04" expired at .* and can no longer be renewed$/m,
      );
      expect(blocked.stderr).toContain(
        `fabric dev init --dev-id dev04 --server ${enrollmentUrl()} --pin <PIN from your admin>`,
      );
      expect(reported.code, reported.stderr).toBe(0);
      expect(JSON.parse(reported.stdout).expired).toBe(true);
      expect(reported.stderr).toMatch(/^warning: your identity user "dev04" expired at /m);

      // Re-onboarding with a new PIN brings it back; without the root fingerprint the CLI says what it
      // could not check, and shows the fingerprint to compare.
      const { command: again } = await issuePin("dev04");
      const reinit = await runFabric(again.slice(0, -2), { home: devHome });
      expect(reinit.code, reinit.stderr).toBe(0);
      expect(reinit.stderr).toContain(
        `warning: no --ca-fingerprint given, so the server was checked against your PIN only; compare the root fingerprint ${up.summary.rootFingerprintSha256}`,
      );
      const back = await runFabric(["ca", "get-trust-bundle"], { home: devHome });
      expect(back.code, back.stderr).toBe(0);
    },
  );
});
