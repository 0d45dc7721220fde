import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { spawnTs } from "../src/testing/processes.js";

const FIXTURE = fileURLToPath(new URL("./fixtures/uncaught.ts", import.meta.url));

describe("a connection's PING timing out outside any call", () => {
  it("is logged and the process lives on", async () => {
    const child = await spawnTs(FIXTURE, { args: ["ping"] });
    expect(await child.exited).toBe(0);
    expect(child.output()).toMatch(/keepalive PINGs/);
    expect(child.output()).toMatch(/still running/);
  });

  it("while any other uncaught exception still ends the process with its stack", async () => {
    const child = await spawnTs(FIXTURE, { args: ["other"] });
    expect(await child.exited).toBe(1);
    expect(child.output()).toMatch(/something else went wrong\n\s+at /);
    expect(child.output()).not.toMatch(/still running/);
  });
});
