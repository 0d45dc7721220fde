import { existsSync, readFileSync } from "node:fs";
import { inspectCertificate, writeFileAtomic } from "@fabric/platform";
import { WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { hasIdentity, loadCurrentIdentity, readNodeRecord, type AgentPaths } from "./state-dir.js";
import type { WorkloadView } from "./supervisor/workload-runner.js";

/** What the running agent publishes in status.json for `fabric-agent status` (and monitoring). */
export interface AgentStatusFile {
  pid: number;
  /** running, or why the agent ended. */
  state: "running" | "stopped" | "reenroll-required";
  message: string;
  updatedAt: string;
  agentVersion: string;
  snapshot: { version: string; generatedAt: string; appliedAt: string } | null;
  connections: { router: boolean; registry: boolean };
  health: { state: string; message: string };
  drained: boolean;
  workloads: WorkloadStatusEntry[];
}

export interface WorkloadStatusEntry {
  id: string;
  generation: string;
  runtime: string;
  state: string;
  pid: number | null;
  restarts: number;
  lastExitCode: number;
  health: string;
  message: string;
  stateChangedAt: string;
}

export function workloadStateName(state: WorkloadState): string {
  return WorkloadState[state] ?? String(state);
}

export function toStatusEntry(view: WorkloadView): WorkloadStatusEntry {
  return {
    id: view.id,
    generation: String(view.generation),
    runtime: view.runtime,
    state: workloadStateName(view.state),
    pid: view.pid ?? null,
    restarts: view.restarts,
    lastExitCode: view.lastExitCode,
    health: view.health,
    message: view.message,
    stateChangedAt: view.stateChangedAt.toISOString(),
  };
}

export function writeStatusFile(paths: AgentPaths, status: AgentStatusFile): void {
  writeFileAtomic(paths.status, `${JSON.stringify(status, null, 2)}\n`, 0o600);
}

export function readStatusFile(paths: AgentPaths): AgentStatusFile | undefined {
  if (!existsSync(paths.status)) return undefined;
  return JSON.parse(readFileSync(paths.status, "utf8")) as AgentStatusFile;
}

/** Everything `fabric-agent status` shows, from the state directory alone (no control plane needed). */
export interface StatusReport {
  enrolled: boolean;
  node?: {
    id: string;
    cluster: string;
    spiffeId: string;
    serial: string;
    notBefore: string;
    notAfter: string;
    expired: boolean;
  };
  agent?: AgentStatusFile & { alive: boolean };
}

export function statusReport(paths: AgentPaths, now = new Date()): StatusReport {
  if (!hasIdentity(paths)) return { enrolled: false };
  const facts = inspectCertificate(loadCurrentIdentity(paths).certificatePem);
  const record = readNodeRecord(paths);
  const status = readStatusFile(paths);
  return {
    enrolled: true,
    node: {
      id: facts.subjectCommonName ?? record?.nodeId ?? "",
      cluster: facts.clusterExtension ?? record?.clusterId ?? "",
      spiffeId: facts.spiffeId ?? "",
      serial: facts.serialHex,
      notBefore: facts.notBefore.toISOString(),
      notAfter: facts.notAfter.toISOString(),
      expired: facts.notAfter <= now,
    },
    ...(status
      ? { agent: { ...status, alive: status.state === "running" && processAlive(status.pid) } }
      : {}),
  };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Human-readable status, as a table on a terminal. */
export function formatStatus(report: StatusReport, now = new Date()): string {
  if (!report.enrolled || !report.node) {
    return "Not enrolled. Run: fabric-agent enroll --server <enrollment URL> --token <join token> --ca-bundle <ca.pem>\n";
  }
  const n = report.node;
  const lines = [
    `Node:          ${n.id}`,
    `Cluster:       ${n.cluster}`,
    `SPIFFE ID:     ${n.spiffeId}`,
    `Certificate:   serial ${n.serial}`,
    `Expires:       ${n.notAfter} (${n.expired ? "EXPIRED: re-enroll" : `in ${span(Date.parse(n.notAfter) - now.getTime())}`})`,
  ];
  const a = report.agent;
  if (!a) {
    lines.push("Agent:         has not run yet");
    return `${lines.join("\n")}\n`;
  }
  const age = span(now.getTime() - Date.parse(a.updatedAt));
  lines.push(
    `Agent:         ${a.alive ? `running (pid ${a.pid})` : a.state === "running" ? "not running" : a.state}, status updated ${age} ago${a.message ? ` — ${a.message}` : ""}`,
    `Health:        ${a.health.state}${a.health.message ? ` (${a.health.message})` : ""}`,
    `Control plane: router ${a.connections.router ? "connected" : "disconnected"}, registry ${a.connections.registry ? "connected" : "disconnected"}`,
    `Snapshot:      ${a.snapshot ? `version ${a.snapshot.version}, generated ${a.snapshot.generatedAt}, applied ${a.snapshot.appliedAt}` : "none verified yet"}`,
  );
  if (a.drained) lines.push("Drained:       yes (workloads stopped by directive)");
  lines.push("", "Workloads:");
  if (a.workloads.length === 0) lines.push("  none");
  else {
    const rows = [
      ["ID", "STATE", "PID", "RESTARTS", "HEALTH", "RUNTIME", "MESSAGE"],
      ...a.workloads.map((w) => [
        w.id,
        w.state,
        w.pid === null ? "-" : String(w.pid),
        String(w.restarts),
        w.health,
        w.runtime,
        w.message,
      ]),
    ];
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const row of rows)
      lines.push(`  ${row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join("  ")}`);
  }
  return `${lines.join("\n")}\n`;
}

function span(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  const d = Math.floor(s / 86_400);
  const h = Math.floor((s % 86_400) / 3_600);
  const m = Math.floor((s % 3_600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}
