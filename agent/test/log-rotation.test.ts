import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { RotatingLog } from "../src/log-rotation.js";
import { removeTempDirs, tempDir } from "./fixtures/temp-dirs.js";

afterAll(removeTempDirs);

const line = (i: number) => `line ${String(i).padStart(4, "0")} ${"x".repeat(40)}\n`; // 51 bytes

describe("size-rotated workload logs", () => {
  it("rotates before a write would pass the size limit and keeps maxFiles files, newest first", () => {
    const dir = tempDir("agent-logs-");
    const log = new RotatingLog(join(dir, "w.log"), { maxBytes: 200, maxFiles: 3 });
    for (let i = 0; i < 40; i++) log.write(line(i));
    log.close();
    expect(readdirSync(dir).sort()).toEqual(["w.log", "w.log.1", "w.log.2"]);
    for (const f of readdirSync(dir)) expect(statSync(join(dir, f)).size).toBeLessThanOrEqual(200);
    // 3 lines of 51 bytes fit in 200, so files hold lines 0-2, 3-5, ... 36-38 and 39; the newest three
    // files survive, in order.
    const kept = ["w.log.2", "w.log.1", "w.log"].map((f) => readFileSync(join(dir, f), "utf8")).join("");
    expect(kept).toBe(Array.from({ length: 7 }, (_, k) => line(33 + k)).join(""));
    expect(statSync(join(dir, "w.log")).mode & 0o777).toBe(0o600);
  });

  it("continues an existing file after a restart and keeps a single file when maxFiles is 1", () => {
    const dir = tempDir("agent-logs-");
    const path = join(dir, "w.log");
    const first = new RotatingLog(path, { maxBytes: 1000, maxFiles: 2 });
    first.write("before restart\n");
    first.close();
    const second = new RotatingLog(path, { maxBytes: 1000, maxFiles: 2 });
    second.write("after restart\n");
    second.close();
    expect(readFileSync(path, "utf8")).toBe("before restart\nafter restart\n");

    const single = new RotatingLog(join(dir, "one.log"), { maxBytes: 100, maxFiles: 1 });
    for (let i = 0; i < 10; i++) single.write(line(i));
    single.close();
    expect(existsSync(join(dir, "one.log.1"))).toBe(false);
    expect(readFileSync(join(dir, "one.log"), "utf8")).toBe(line(9));
  });

  it("writes a chunk larger than the limit whole, into a fresh file", () => {
    const dir = tempDir("agent-logs-");
    const log = new RotatingLog(join(dir, "w.log"), { maxBytes: 100, maxFiles: 2 });
    log.write("small\n");
    log.write("y".repeat(300));
    log.close();
    expect(readFileSync(join(dir, "w.log"), "utf8")).toBe("y".repeat(300));
    expect(readFileSync(join(dir, "w.log.1"), "utf8")).toBe("small\n");
  });
});
