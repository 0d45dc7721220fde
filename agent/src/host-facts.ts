import { readFileSync } from "node:fs";
import os from "node:os";
import { create } from "@bufbuild/protobuf";
import { NodeFactsSchema, type NodeFacts } from "@fabric/proto/fabric/common/v1/common_pb.js";
import type { AgentConfig } from "./config.js";

/** fabric-agent's version, from its package.json (reported in facts and heartbeats). */
export const AGENT_VERSION: string = (
  JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }
).version;

/** Operating system family in the contract's terms. */
function osFamily(): string {
  return process.platform === "win32" ? "windows" : process.platform;
}

/** What the approving admin sees about this host. Facts never grant anything. */
export function hostFacts(config: Pick<AgentConfig, "region" | "labels" | "addresses">): NodeFacts {
  return create(NodeFactsSchema, {
    hostname: os.hostname().slice(0, 253),
    os: osFamily(),
    osVersion: `${os.version()} ${os.release()}`.trim().slice(0, 256),
    arch: process.arch,
    agentVersion: AGENT_VERSION,
    cpuCores: os.availableParallelism(),
    memoryBytes: BigInt(os.totalmem()),
    region: config.region,
    addresses: config.addresses,
    labels: config.labels,
  });
}

/** CPU busy fraction across all cores since the previous call, and memory in use, both 0.0-1.0. */
export class HostLoad {
  private last = cpuTimes();

  sample(): { cpuRatio: number; memoryRatio: number } {
    const now = cpuTimes();
    const total = now.total - this.last.total;
    const idle = now.idle - this.last.idle;
    this.last = now;
    const cpuRatio = total > 0 ? Math.min(1, Math.max(0, 1 - idle / total)) : 0;
    const memoryRatio = 1 - os.freemem() / os.totalmem();
    return { cpuRatio, memoryRatio };
  }
}

function cpuTimes(): { idle: number; total: number } {
  let idle = 0;
  let total = 0;
  for (const cpu of os.cpus()) {
    const t = cpu.times;
    idle += t.idle;
    total += t.user + t.nice + t.sys + t.idle + t.irq;
  }
  return { idle, total };
}
