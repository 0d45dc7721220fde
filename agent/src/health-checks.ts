import type { ChildProcess } from "node:child_process";
import http from "node:http";
import https from "node:https";
import { connect } from "node:net";
import { durationMs } from "./durations.js";
import type { HealthCheck } from "@fabric/proto/fabric/common/v1/workload_pb.js";

export interface ProbeResult {
  ok: boolean;
  /** Why it failed (or what it saw), for the workload's status message. */
  message: string;
}

/** Runs a probe command next to the workload: natively, or inside its container. */
export type ExecProbeRunner = (command: string[], timeoutMs: number) => Promise<ProbeResult>;

export type Probe = (timeoutMs: number) => Promise<ProbeResult>;

export interface HealthSettings {
  intervalMs: number;
  timeoutMs: number;
  initialDelayMs: number;
  failureThreshold: number;
  successThreshold: number;
}

/** The contract's defaults and bounds: interval 10 s (≥ 1 s), timeout 2 s (< interval), thresholds 3/1. */
export function healthSettings(check: HealthCheck): HealthSettings {
  const intervalMs = Math.max(1_000, durationMs(check.interval, 10_000));
  const timeoutMs = Math.min(Math.max(100, durationMs(check.timeout, 2_000)), intervalMs - 1);
  return {
    intervalMs,
    timeoutMs,
    initialDelayMs: durationMs(check.initialDelay, 0),
    failureThreshold: Math.max(1, check.failureThreshold || 3),
    successThreshold: Math.max(1, check.successThreshold || 1),
  };
}

export function probeFor(check: HealthCheck, exec: ExecProbeRunner): Probe {
  const probe = check.probe;
  switch (probe.case) {
    case "exec":
      return (timeoutMs) => exec(probe.value.command, timeoutMs);
    case "http": {
      const { host, port, path, tls } = probe.value;
      return (timeoutMs) => httpProbe({ host: host || "127.0.0.1", port, path: path || "/", tls }, timeoutMs);
    }
    case "tcp": {
      const { host, port } = probe.value;
      return (timeoutMs) => tcpProbe(host || "127.0.0.1", port, timeoutMs);
    }
    default:
      return async () => ({ ok: false, message: "the health check names no probe" });
  }
}

/**
 * exec probe for native workloads: exit status 0 within the timeout is healthy. `start` spawns the probe
 * command the way the workload itself is started (same user, directory and environment): the probe
 * command comes from the same spec.
 */
export function nativeExecProbe(start: (file: string, args: string[]) => ChildProcess): ExecProbeRunner {
  return (command, timeoutMs) =>
    new Promise((resolve) => {
      const [file, ...args] = command;
      if (!file) return resolve({ ok: false, message: "exec probe has no command" });
      const child = start(file, args);
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        resolve({ ok: false, message: `exec probe timed out after ${timeoutMs} ms` });
      }, timeoutMs);
      child.once("error", (err) => {
        clearTimeout(timer);
        resolve({ ok: false, message: `exec probe could not run ${file}: ${err.message}` });
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        resolve(
          code === 0
            ? { ok: true, message: "exec probe passed" }
            : { ok: false, message: `exec probe exited with ${signal ?? `status ${code}`}` },
        );
      });
    });
}

function httpProbe(
  target: { host: string; port: number; path: string; tls: boolean },
  timeoutMs: number,
): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const url = `${target.tls ? "https" : "http"}://${target.host}:${target.port}${target.path}`;
    const request = (target.tls ? https : http).get(url, {
      timeout: timeoutMs,
      // A fresh connection per probe: a pooled one could pass while the workload accepts no new ones.
      agent: false,
      // The contract says the probe does not verify the workload's certificate.
      ...(target.tls ? { rejectUnauthorized: false } : {}),
    });
    request.once("response", (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      resolve(
        status >= 200 && status < 400
          ? { ok: true, message: `GET ${url} answered ${status}` }
          : { ok: false, message: `GET ${url} answered ${status}` },
      );
    });
    request.once("timeout", () => request.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    request.once("error", (err) => resolve({ ok: false, message: `GET ${url} failed: ${err.message}` }));
  });
}

export function tcpProbe(host: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const finish = (result: ProbeResult) => {
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(timeoutMs, () =>
      finish({ ok: false, message: `connect to ${host}:${port} timed out` }),
    );
    socket.once("connect", () => finish({ ok: true, message: `connected to ${host}:${port}` }));
    socket.once("error", (err) =>
      finish({ ok: false, message: `connect to ${host}:${port} failed: ${err.message}` }),
    );
  });
}

/**
 * Runs a probe on its interval and reports verdicts: healthy after `successThreshold` consecutive passes,
 * unhealthy after `failureThreshold` consecutive failures. Only changes of verdict are reported.
 */
export class HealthMonitor {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private successes = 0;
  private failures = 0;
  private verdict: boolean | undefined;

  constructor(
    private readonly probe: Probe,
    private readonly settings: HealthSettings,
    private readonly onVerdict: (healthy: boolean, message: string) => void,
  ) {}

  start(): void {
    this.schedule(this.settings.initialDelayMs);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), delayMs);
  }

  private async tick(): Promise<void> {
    const result = await this.probe(this.settings.timeoutMs);
    if (this.stopped) return;
    if (result.ok) {
      this.successes += 1;
      this.failures = 0;
      if (this.verdict !== true && this.successes >= this.settings.successThreshold)
        this.report(true, result);
    } else {
      this.failures += 1;
      this.successes = 0;
      if (this.verdict !== false && this.failures >= this.settings.failureThreshold)
        this.report(false, result);
    }
    this.schedule(this.settings.intervalMs);
  }

  private report(healthy: boolean, result: ProbeResult): void {
    this.verdict = healthy;
    this.onVerdict(healthy, result.message);
  }
}
