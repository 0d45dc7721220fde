// `fabric ca init|status` on a CA directory (no services needed): creation with both passphrase sources,
// refusal to overwrite, --exist-ok with the right and a wrong passphrase, and what status shows.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runFabricHere as run } from "./fixtures/run-fabric.js";

const scratch = mkdtempSync(join(tmpdir(), "fabric-ca-local-"));
const home = join(scratch, "home");
const passphrase = "a passphrase long enough";
// No database for status: the counts are left out rather than read from some DATABASE_URL.
const env = { FABRIC_CA_PASSPHRASE: passphrase, DATABASE_URL: "" };

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("fabric ca init", () => {
  const dir = join(scratch, "ca");

  it(
    "creates root, intermediate and the four service identities, printing both fingerprints",
    { timeout: 60_000 },
    async () => {
      const res = await run(["ca", "init", "--dir", dir, "--trust-domain", "corp.example"], { home, env });
      expect(res.code, res.stderr).toBe(0);
      const doc = JSON.parse(res.stdout);
      expect(doc).toMatchObject({
        dir,
        created: true,
        trustDomain: "corp.example",
        passphrase: "FABRIC_CA_PASSPHRASE",
      });
      expect(doc.rootFingerprintSha256).toMatch(/^[0-9a-f]{64}$/);
      expect(doc.intermediateFingerprintSha256).toMatch(/^[0-9a-f]{64}$/);
      for (const name of ["ca", "enrollment", "registry", "router"]) {
        expect(statSync(join(dir, "services", name, "key.pem")).mode & 0o777, name).toBe(0o600);
      }
      // A passphrase from the environment is not written anywhere.
      expect(existsSync(join(home, "ca-passphrase"))).toBe(false);
      expect(res.stdout).not.toContain(passphrase);
    },
  );

  it(
    "refuses to overwrite a CA; --exist-ok keeps it, but only with its passphrase",
    { timeout: 60_000 },
    async () => {
      const [again, wrong, kept] = await Promise.all([
        run(["ca", "init", "--dir", dir], { home, env }),
        run(["ca", "init", "--dir", dir, "--exist-ok"], {
          home,
          env: { ...env, FABRIC_CA_PASSPHRASE: "not the passphrase" },
        }),
        run(["ca", "init", "--dir", dir, "--exist-ok"], { home, env }),
      ]);
      expect(again.code).toBe(6);
      expect(again.stderr).toContain("already holds a CA; refusing to overwrite it");
      expect(wrong.code).toBe(3);
      expect(wrong.stderr).toContain("cannot open the CA keys");
      expect(wrong.stderr).not.toContain("not the passphrase");
      expect(kept.code, kept.stderr).toBe(0);
      expect(JSON.parse(kept.stdout)).toMatchObject({
        created: false,
        trustDomain: "corp.example",
        refreshedServiceIdentities: [],
      });
    },
  );

  it(
    "generates and stores a passphrase (0600) when none is given, and status shows the CA",
    { timeout: 60_000 },
    async () => {
      const own = join(scratch, "generated");
      const init = await run(["ca", "init"], {
        home: own,
        env: { FABRIC_CA_PASSPHRASE: "", DATABASE_URL: "" },
      });
      expect(init.code, init.stderr).toBe(0);
      const stored = join(own, "ca-passphrase");
      expect(statSync(stored).mode & 0o777).toBe(0o600);
      expect(init.stdout).not.toContain(readFileSync(stored, "utf8").trim());
      expect(JSON.parse(init.stdout)).toMatchObject({
        dir: join(own, "ca"),
        trustDomain: "fabric.local",
        passphrase: stored,
      });

      const status = await run(["ca", "status"], { home: own, env: { DATABASE_URL: "" } });
      expect(status.code, status.stderr).toBe(0);
      const doc = JSON.parse(status.stdout);
      expect(doc).toMatchObject({
        trustDomain: "fabric.local",
        rootCertificate: join(own, "ca", "root.pem"),
        counts: null,
      });
      expect(doc.root.fingerprintSha256).toBe(JSON.parse(init.stdout).rootFingerprintSha256);
      expect(doc.root.keyPresent).toBe(true);

      const missing = await run(["ca", "status", "--dir", join(scratch, "nowhere")], { home: own });
      expect(missing.code).toBe(4);
      expect(missing.stderr).toContain("holds no Fabric CA");
    },
  );
});
