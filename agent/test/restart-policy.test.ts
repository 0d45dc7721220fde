import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { RestartMode, RestartPolicySchema } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { describe, expect, it } from "vitest";
import { RestartTracker, restartSettings } from "../src/supervisor/restart-policy.js";
import { Backoff } from "../src/backoff.js";

const policy = (init: Parameters<typeof create<typeof RestartPolicySchema>>[1]) =>
  restartSettings(create(RestartPolicySchema, init));

describe("restart policy", () => {
  it("uses the contract's defaults when unset", () => {
    expect(restartSettings(undefined)).toEqual({
      mode: RestartMode.ALWAYS,
      initialBackoffMs: 1_000,
      maxBackoffMs: 300_000,
      crashLoopThreshold: 5,
      crashLoopWindowMs: 600_000,
      resetAfterMs: 60_000,
    });
  });

  it("doubles the delay per short-lived run up to the maximum, and a long run resets it", () => {
    const t = new RestartTracker(
      policy({
        initialBackoff: durationFromMs(100),
        maxBackoff: durationFromMs(500),
        crashLoopThreshold: 100,
      }),
    );
    const exit = (uptimeMs: number, now: number) => t.onExit({ code: 1, signal: null, uptimeMs }, now);
    const delays = [0, 1, 2, 3, 4].map((i) => exit(10, i));
    expect(delays.map((d) => (d.restart ? d.delayMs : -1))).toEqual([100, 200, 400, 500, 500]);
    const afterLongRun = exit(60_000, 5);
    expect(afterLongRun.restart && afterLongRun.delayMs).toBe(100);
    expect(t.count).toBe(6);
  });

  it("calls it a crash loop at the threshold inside the window, and waits the longest backoff", () => {
    const t = new RestartTracker(
      policy({
        crashLoopThreshold: 5,
        crashLoopWindow: durationFromMs(60_000),
        maxBackoff: durationFromMs(30_000),
      }),
    );
    const at = (s: number) => t.onExit({ code: 1, signal: null, uptimeMs: 5 }, s * 1000);
    const decisions = [0, 10, 20, 30, 40].map(at);
    expect(decisions.map((d) => d.restart && d.crashLoop)).toEqual([false, false, false, false, true]);
    expect(decisions[4]!.restart && decisions[4]!.delayMs).toBe(30_000);
    // Restarts spread wider than the window are not a crash loop.
    const slow = new RestartTracker(
      policy({ crashLoopThreshold: 3, crashLoopWindow: durationFromMs(60_000) }),
    );
    const spread = [0, 61, 122, 183].map((s) =>
      slow.onExit({ code: 1, signal: null, uptimeMs: 5 }, s * 1000),
    );
    expect(spread.some((d) => d.restart && d.crashLoop)).toBe(false);
  });

  it("follows the mode: on-failure restarts only failures, never restarts nothing", () => {
    const onFailure = new RestartTracker(policy({ mode: RestartMode.ON_FAILURE }));
    expect(onFailure.onExit({ code: 0, signal: null, uptimeMs: 1 }).restart).toBe(false);
    expect(onFailure.onExit({ code: 2, signal: null, uptimeMs: 1 }).restart).toBe(true);
    expect(onFailure.onExit({ code: null, signal: "SIGKILL", uptimeMs: 1 }).restart).toBe(true);
    const never = new RestartTracker(policy({ mode: RestartMode.NEVER }));
    expect(never.onExit({ code: 1, signal: null, uptimeMs: 1 }).restart).toBe(false);
  });
});

describe("reconnect backoff", () => {
  it("draws full jitter below an exponentially growing, capped ceiling, and resets", () => {
    const ceilings: number[] = [];
    const b = new Backoff(100, 1_000, () => 1);
    for (let i = 0; i < 6; i++) ceilings.push(b.next());
    expect(ceilings).toEqual([100, 200, 400, 800, 1_000, 1_000]);
    b.reset();
    expect(b.next()).toBe(100);
    expect(new Backoff(100, 1_000, () => 0).next()).toBe(0);
  });
});
