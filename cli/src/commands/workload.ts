import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { EnvironmentSchema, RuntimeSchema } from "@fabric/proto/fabric/common/v1/common_pb.js";
import {
  HealthCheckSchema,
  RestartModeSchema,
  WorkloadSpecSchema,
  WorkloadStateSchema,
  type HealthCheck,
} from "@fabric/proto/fabric/common/v1/workload_pb.js";
import type { Command, FlagValues } from "../command.js";
import { usageError } from "../cli-error.js";
import { DEFAULT_CLUSTER_ID } from "../local-fabric.js";
import { formatTable } from "../output.js";
import { enumChoices, findEnumValue } from "../rpc/enums.js";
import { choiceFlag, clusterFlag, durationFlag, listFlag, textFlag } from "./flag-values.js";
import type { CommandModule } from "./module.js";
import { collectPages, enumText, protoJson } from "./present.js";
import { registryApi } from "./registry-api.js";

/** `fabric workload set|ls|rm`: the desired state of what nodes run. */
export const workloadCommands: CommandModule = () => {
  const runtimes = enumChoices(RuntimeSchema);
  const environments = enumChoices(EnvironmentSchema);
  const restartModes = enumChoices(RestartModeSchema);

  const set: Command = {
    path: ["workload", "set"],
    summary: "Creates or replaces a workload: what nodes holding a role run.",
    help:
      "Writes a workload's complete desired state (replacing the previous one): every node holding the " +
      "role in the cluster (or only the nodes given with --node) runs it, supervised by fabric-agent. " +
      "The command line comes after `--`: `fabric workload set web --role relay-node -- node server.js`. " +
      "Environment guard rules: dev may use mounts, sync and reload and needs no image; tst and pro need " +
      "a container image (pro digest-pinned). The spec is distributed in clear inside signed snapshots: " +
      "never put secrets in it.",
    flags: [
      {
        name: "role",
        type: "string",
        valueName: "<role>",
        help: "Role a node must hold to run it. Required.",
      },
      clusterFlag(`Cluster of the workload (default: ${DEFAULT_CLUSTER_ID}).`),
      {
        name: "runtime",
        type: "string",
        valueName: "<runtime>",
        choices: runtimes,
        help: `How the agent runs it: ${runtimes.join(" or ")} (default native).`,
      },
      {
        name: "environment",
        type: "string",
        valueName: "<env>",
        choices: environments,
        help: `Environment, which decides the guard rules: ${environments.join(", ")} (default dev).`,
      },
      {
        name: "image",
        type: "string",
        valueName: "<image>",
        help: "Container image (container runtime; required in tst and pro, digest-pinned in pro).",
      },
      {
        name: "env",
        type: "string",
        multiple: true,
        valueName: "<KEY=VALUE>",
        help: "Environment variable for the process (repeatable). Stored in clear: no secrets.",
      },
      { name: "workdir", type: "string", valueName: "<dir>", help: "Working directory of the process." },
      {
        name: "node",
        type: "string",
        multiple: true,
        valueName: "<id,...>",
        help: "Run it only on these nodes (each must hold the role). Default: every node holding the role.",
      },
      { name: "org", type: "string", valueName: "<id>", help: "Organization the workload serves." },
      {
        name: "health-http",
        type: "string",
        valueName: "<port>[/path]",
        help: "Health check: HTTP GET on 127.0.0.1:<port><path>; 2xx/3xx is healthy.",
      },
      {
        name: "health-tcp",
        type: "string",
        valueName: "<port>",
        help: "Health check: a TCP connection to 127.0.0.1:<port>.",
      },
      {
        name: "health-interval",
        type: "string",
        valueName: "<duration>",
        help: "Time between health checks (default 10s).",
      },
      {
        name: "restart",
        type: "string",
        valueName: "<mode>",
        choices: restartModes,
        help: `When to restart the process after it exits: ${restartModes.join(", ")} (default always).`,
      },
      {
        name: "stop-grace",
        type: "string",
        valueName: "<duration>",
        help: "Time between SIGTERM and SIGKILL when stopping (default 10s).",
      },
      {
        name: "label",
        type: "string",
        multiple: true,
        valueName: "<key=value>",
        help: "Label for operators (repeatable).",
      },
    ],
    args: [
      { name: "workload-id", help: "Workload id: 1-63 characters of [a-z0-9-], starting with a letter." },
      {
        name: "command",
        help: "After `--`: the executable and its arguments (native: required; container: overrides the entrypoint).",
        optional: true,
        variadic: true,
      },
    ],
    identity: "check",
    server: "registry",
    async run({ session, args, flags, output }) {
      const api = await registryApi();
      const role = textFlag(flags, "role");
      if (!role) throw usageError("--role is required: the workload runs on nodes holding that role");
      const [id, command, ...commandArgs] = args as [string, ...string[]];
      const runtime = choiceFlag(flags, "runtime", runtimes) ?? "native";
      const environment = choiceFlag(flags, "environment", environments) ?? "dev";
      const restart = choiceFlag(flags, "restart", restartModes);
      const stopGrace = durationFlag(flags, "stop-grace");
      const healthCheck = healthCheckOf(flags);
      const spec = create(WorkloadSpecSchema, {
        id,
        clusterId: textFlag(flags, "cluster") ?? DEFAULT_CLUSTER_ID,
        role,
        organizationId: textFlag(flags, "org") ?? "",
        nodeIds: listFlag(flags, "node"),
        runtime: findEnumValue(RuntimeSchema, runtime)!.number,
        environment: findEnumValue(EnvironmentSchema, environment)!.number,
        command: command ?? "",
        args: commandArgs,
        image: textFlag(flags, "image") ?? "",
        env: pairsFlag(flags, "env"),
        workingDir: textFlag(flags, "workdir") ?? "",
        labels: pairsFlag(flags, "label"),
        ...(healthCheck ? { healthCheck } : {}),
        ...(restart ? { restartPolicy: { mode: findEnumValue(RestartModeSchema, restart)!.number } } : {}),
        ...(stopGrace !== undefined ? { stopGracePeriod: durationFromMs(stopGrace) } : {}),
      });
      const res = await session.client(api.RegistryService, "registry").putWorkload({ spec });
      const w = res.workload!;
      output.print(
        protoJson(api.PutWorkloadResponseSchema, res),
        () =>
          `${res.created ? "created" : "updated"} workload ${w.spec!.id} (generation ${w.generation}): ` +
          `nodes holding ${w.spec!.role} in cluster ${w.spec!.clusterId} run it; ` +
          "see its status with `fabric workload ls`\n",
      );
    },
  };

  const ls: Command = {
    path: ["workload", "ls"],
    summary: "Lists workloads with what each node reports about them.",
    help: "Lists workloads ordered by id: role, runtime, environment, generation, what runs, and the state each node running it last reported.",
    flags: [
      clusterFlag("Only workloads of this cluster."),
      { name: "role", type: "string", valueName: "<role>", help: "Only workloads of this role." },
    ],
    identity: "check",
    server: "registry",
    async run({ session, flags, output }) {
      const api = await registryApi();
      const clusterId = textFlag(flags, "cluster") ?? "";
      const client = session.client(api.RegistryService, "registry");
      const [workloads, statuses] = await Promise.all([
        collectPages(async (pageToken) => {
          const page = await client.listWorkloads({
            clusterId,
            role: textFlag(flags, "role") ?? "",
            pageSize: 1000,
            pageToken,
          });
          return { items: page.workloads, nextPageToken: page.nextPageToken };
        }),
        collectPages(async (pageToken) => {
          const page = await client.listWorkloadStatus({ clusterId, pageSize: 1000, pageToken });
          return { items: page.statuses, nextPageToken: page.nextPageToken };
        }),
      ]);
      const statusOf = (id: string) => statuses.filter((s) => s.workloadId === id);
      const doc = {
        workloads: workloads.map((w) => ({
          ...(protoJson(api.WorkloadSchema, w) as object),
          statuses: statusOf(w.spec!.id).map((s) => protoJson(api.WorkloadStatusSchema, s)),
        })),
      };
      output.print(doc, () =>
        workloads.length === 0
          ? "no workloads\n"
          : formatTable(
              ["ID", "CLUSTER", "ROLE", "RUNTIME", "ENVIRONMENT", "GENERATION", "RUNS", "NODES"],
              workloads.map((w) => {
                const s = w.spec!;
                return [
                  s.id,
                  s.clusterId,
                  s.role,
                  enumText(RuntimeSchema, s.runtime),
                  enumText(EnvironmentSchema, s.environment),
                  String(w.generation),
                  s.image || [s.command, ...s.args].join(" ").slice(0, 40),
                  statusOf(s.id)
                    .map((st) => `${st.nodeId}=${enumText(WorkloadStateSchema, st.state)}`)
                    .join(" ") || "-",
                ];
              }),
            ),
      );
    },
  };

  const rm: Command = {
    path: ["workload", "rm"],
    summary: "Deletes a workload; nodes stop it with their next snapshot.",
    help: "Deletes a workload's desired state. Every node running it stops it once its next snapshot arrives.",
    flags: [],
    args: [{ name: "workload-id", help: "The workload id (see `fabric workload ls`)." }],
    identity: "check",
    server: "registry",
    async run({ session, args, output }) {
      const api = await registryApi();
      const id = args[0]!;
      await session.client(api.RegistryService, "registry").deleteWorkload({ workloadId: id });
      output.print({ deleted: id }, () => `deleted workload ${id}\n`);
    },
  };

  return {
    groups: [
      {
        path: ["workload"],
        summary: "Sets, lists and deletes workloads (what nodes run).",
        help:
          "A workload is desired state: what to run (a native command or a container image), on nodes " +
          "holding which role in which cluster, and how to supervise it. Nodes receive the workloads " +
          "assigned to them in signed snapshots and report their state back.",
        section: "commands",
      },
    ],
    commands: [set, ls, rm],
  };
};

/** `--env K=V --env K2=V2` → { K: V, K2: V2 }; values are never echoed in errors. */
function pairsFlag(flags: FlagValues, name: string): Record<string, string> {
  const value = flags[name];
  const items = (Array.isArray(value) ? value : value === undefined ? [] : [value]).filter(
    (v): v is string => typeof v === "string",
  );
  const out: Record<string, string> = {};
  for (const item of items) {
    const at = item.indexOf("=");
    if (at <= 0) throw usageError(`--${name} takes KEY=VALUE pairs (one of them has no key or no "=")`);
    out[item.slice(0, at)] = item.slice(at + 1);
  }
  return out;
}

function healthCheckOf(flags: FlagValues): HealthCheck | undefined {
  const http = textFlag(flags, "health-http");
  const tcp = textFlag(flags, "health-tcp");
  if (http !== undefined && tcp !== undefined) {
    throw usageError("give one health check: --health-http or --health-tcp, not both");
  }
  const interval = durationFlag(flags, "health-interval");
  const timing = interval !== undefined ? { interval: durationFromMs(interval) } : {};
  if (http !== undefined) {
    const match = /^(\d{1,5})(\/.*)?$/.exec(http);
    const port = Number(match?.[1]);
    if (!match || port < 1 || port > 65535) {
      throw usageError(`--health-http must be <port> or <port>/<path>, e.g. 8080/healthz (got "${http}")`);
    }
    return create(HealthCheckSchema, {
      probe: { case: "http", value: { port, path: match[2] ?? "/" } },
      ...timing,
    });
  }
  if (tcp !== undefined) {
    const port = Number(tcp);
    if (!/^\d{1,5}$/.test(tcp) || port < 1 || port > 65535) {
      throw usageError(`--health-tcp must be a port number (got "${tcp}")`);
    }
    return create(HealthCheckSchema, { probe: { case: "tcp", value: { port } }, ...timing });
  }
  if (interval !== undefined) throw usageError("--health-interval needs --health-http or --health-tcp");
  return undefined;
}
