// The README's configuration reference is generated from the ServiceDefinitions: this keeps it current
// and complete, so a new or renamed setting cannot go undocumented.
import { readFileSync } from "node:fs";
import { baseSettings } from "@fabric/platform";
import { describe, expect, it } from "vitest";
import {
  SERVICE_DEFINITIONS,
  SETTINGS_BEGIN,
  SETTINGS_END,
  renderedSettings,
} from "../src/reference/readme-settings.js";
import { MEANINGS, settingRows } from "../src/reference/service-settings.js";

const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");

describe("the configuration reference in README.md", () => {
  it("is what `npm run docs:settings` generates from the ServiceDefinitions now", async () => {
    const begin = readme.indexOf(SETTINGS_BEGIN);
    const end = readme.indexOf(SETTINGS_END);
    expect(begin, "README.md has the settings markers").toBeGreaterThan(0);
    const current = readme.slice(begin, end + SETTINGS_END.length);
    expect(current, "README.md is stale: run `npm run docs:settings`").toBe(
      (await renderedSettings()).trimEnd(),
    );
  });

  it("names every setting of every service, with its variable and a meaning", () => {
    const keys = new Set<string>();
    for (const def of SERVICE_DEFINITIONS) {
      for (const row of settingRows(def)) {
        keys.add(row.key);
        expect(MEANINGS[row.key], `${def.name}: ${row.key} has no meaning`).toBeTruthy();
        expect(readme).toContain(`| \`${row.env}\``);
      }
    }
    expect(keys).toContain("caDir");
    expect(keys).toContain("registryUrl");
    expect(keys).toContain("debounceMs");
    for (const key of Object.keys(baseSettings({ grpcPort: 0, httpPort: 0 }))) expect(keys).toContain(key);
    // No meaning is kept for a setting that no longer exists.
    expect(Object.keys(MEANINGS).filter((k) => !keys.has(k))).toEqual([]);
  });

  it("shows the database URL under the name the runtime reads first, and each service's ports", () => {
    const rows = settingRows(SERVICE_DEFINITIONS[0]!);
    expect(rows.find((r) => r.key === "databaseUrl")).toMatchObject({ env: "DATABASE_URL", required: true });
    expect(readme).toMatch(
      /\| `FABRIC_GRPC_PORT` +\| `ca 7400, enrollment 7401, registry 7402, router 7403` \|/,
    );
  });
});
