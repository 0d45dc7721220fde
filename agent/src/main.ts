import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { ConfigError, createLogger, survivePingTimeouts } from "@fabric/platform";
import { Agent } from "./agent.js";
import { configFileFor, loadAgentConfig, type AgentConfig, type AgentSettingKey } from "./config.js";
import { resolveEndpoints } from "./endpoints.js";
import { enroll, refuseIfEnrolled } from "./enroll.js";
import { AgentExit, EXIT } from "./exit-codes.js";
import { AGENT_VERSION } from "./host-facts.js";
import { isWithin, realPath } from "./host-paths.js";
import { agentHome, agentPaths, ensureStateDir, hasIdentity, type AgentPaths } from "./state-dir.js";
import { formatStatus, statusReport } from "./status.js";
import { resolveWorkloadUser } from "./supervisor/workload-user.js";

const USAGE = `fabric-agent ${AGENT_VERSION}: the Fabric node agent

Usage:
  fabric-agent enroll --server URL --token TOKEN --ca-bundle FILE [options]
      Generate this host's key (kept here), join the cluster with a join token, wait for an admin to
      approve, and store the identity in the state directory.
      --server URL            enrollment service, https://host:7401
      --token TOKEN           join token <id>.<secret> (or FABRIC_JOIN_TOKEN; never stored)
      --ca-bundle FILE        Fabric root certificate(s) to trust for enrollment (fabric ca status shows them)
      --name NAME             node name to request (default: derived from the hostname)
      --cluster ID            cluster this host expects to join (refused if the token is for another)
      --roles R1,R2           roles to request (default: all the token allows)
      --capabilities C1,C2    capabilities this host has (also from agent.yaml)
      --registry-url URL      registry service, https://host:7402, stored for \`run\`
      --router-url URL        router service, https://host:7403, stored for \`run\`
      --trust-domain TD       require the enrollment server to be spiffe://TD/service/enrollment
      --force                 discard an existing identity or pending enrollment and start over

  fabric-agent run [--registry-url URL] [--router-url URL] [--enrollment-url URL]
      Run the node: follow signed snapshots, supervise workloads, report, renew.

  fabric-agent status [--json]
      Show the identity, its expiry, the applied snapshot and the workloads.

Common options:
  --config FILE      settings file (default: $FABRIC_AGENT_HOME/agent.yaml if present)
  --state-dir DIR    state directory (default: $FABRIC_AGENT_HOME, else /var/lib/fabric-agent)

Exit status: 0 ok, 1 failure, 2 usage, 3 enrollment rejected or expired,
             10 identity expired, revoked or shut down (re-enroll), 78 bad configuration.
`;

const FLAGS = {
  server: { type: "string" },
  "enrollment-url": { type: "string" },
  token: { type: "string" },
  "ca-bundle": { type: "string" },
  name: { type: "string" },
  cluster: { type: "string" },
  roles: { type: "string", multiple: true },
  capabilities: { type: "string", multiple: true },
  "registry-url": { type: "string" },
  "router-url": { type: "string" },
  "trust-domain": { type: "string" },
  force: { type: "boolean" },
  config: { type: "string" },
  "state-dir": { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

type Flags = ReturnType<typeof parse>["values"];

function parse(argv: string[]) {
  return parseArgs({ args: argv, options: FLAGS, allowPositionals: true, strict: true });
}

/** Comma lists and repeated flags both work: --roles a,b --roles c. */
const commaList = (values: string[] | undefined) =>
  values?.flatMap((v) => v.split(",").map((s) => s.trim())).filter(Boolean);

function settings(flags: Flags, paths: AgentPaths): AgentConfig {
  const file = configFileFor(flags.config, process.env, paths.config);
  const named = (flag: string, value: unknown) => ({ flag: `--${flag}`, value });
  const overrides: Partial<Record<AgentSettingKey, { flag: string; value: unknown }>> = {
    enrollmentUrl:
      flags.server !== undefined
        ? named("server", flags.server)
        : named("enrollment-url", flags["enrollment-url"]),
    registryUrl: named("registry-url", flags["registry-url"]),
    routerUrl: named("router-url", flags["router-url"]),
    caBundle: named("ca-bundle", flags["ca-bundle"]),
    trustDomain: named("trust-domain", flags["trust-domain"]),
    nodeName: named("name", flags.name),
    clusterId: named("cluster", flags.cluster),
    roles: named("roles", commaList(flags.roles)),
    capabilities: named("capabilities", commaList(flags.capabilities)),
  };
  return loadAgentConfig({ ...(file ? { file } : {}), flags: overrides });
}

/** workloadRoot, which must not overlap the state directory: workloads cannot enter that, nor may they. */
function workloadRootFor(config: AgentConfig, paths: AgentPaths): string {
  // Not resolved through links: the root itself must not be one (see ownDirectory).
  const root = resolve(config.workloadRoot ?? paths.workloads);
  const [real, home] = [realPath(root), realPath(paths.home)];
  if (isWithin(real, home) || isWithin(home, real)) {
    throw new ConfigError([
      `workloadRoot: ${root} overlaps the state directory ${home}; give a directory beside it`,
    ]);
  }
  return root;
}

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${USAGE}`);
    return EXIT.USAGE;
  }
  const { values: flags, positionals } = parsed;
  const command = positionals[0];
  if (flags.help || !command || command === "help") {
    process.stdout.write(USAGE);
    return command || flags.help ? EXIT.OK : EXIT.USAGE;
  }
  const paths = agentPaths(flags["state-dir"] ?? agentHome());

  switch (command) {
    case "version":
      process.stdout.write(`${AGENT_VERSION}\n`);
      return EXIT.OK;
    case "status": {
      const report = statusReport(paths);
      process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : formatStatus(report));
      return report.enrolled ? EXIT.OK : EXIT.FAILURE;
    }
    case "enroll": {
      refuseIfEnrolled(paths, flags.force ?? false);
      const config = settings(flags, paths);
      if (!config.enrollmentUrl) throw new AgentExit(EXIT.USAGE, "enroll needs --server <enrollment URL>");
      if (!config.caBundle) {
        throw new AgentExit(
          EXIT.USAGE,
          "enroll needs --ca-bundle <file>: the Fabric root certificate(s) this host should trust for its first call",
        );
      }
      let caBundlePem: string;
      try {
        caBundlePem = readFileSync(config.caBundle, "utf8");
      } catch (err) {
        throw new AgentExit(
          EXIT.USAGE,
          `--ca-bundle: cannot read ${config.caBundle}: ${(err as Error).message}`,
        );
      }
      await enroll({
        paths,
        config: { ...config, enrollmentUrl: config.enrollmentUrl },
        token: flags.token ?? process.env.FABRIC_JOIN_TOKEN,
        caBundlePem,
        force: flags.force ?? false,
        out: process.stdout,
      });
      return EXIT.OK;
    }
    case "run": {
      if (!hasIdentity(paths)) {
        throw new AgentExit(
          EXIT.FAILURE,
          `no identity in ${paths.home}: enroll first (fabric-agent enroll --help)`,
        );
      }
      ensureStateDir(paths);
      const config = settings(flags, paths);
      const workloadRoot = workloadRootFor(config, paths);
      const workloadUser = resolveWorkloadUser(config);
      const logger = createLogger({ service: "fabric-agent", level: config.logLevel });
      survivePingTimeouts(logger);
      const agent = new Agent({
        paths,
        config,
        endpoints: resolveEndpoints(config, paths),
        logger,
        workloadUser,
        workloadRoot,
      });
      const stop = (signal: string) => void agent.stop(`received ${signal}`);
      process.once("SIGTERM", () => stop("SIGTERM"));
      process.once("SIGINT", () => stop("SIGINT"));
      const outcome = await agent.run();
      if (outcome.code !== EXIT.OK) console.error(`fabric-agent: ${outcome.message}`);
      logger.flush();
      return outcome.code;
    }
    default:
      console.error(`unknown command "${command}"\n\n${USAGE}`);
      return EXIT.USAGE;
  }
}

main(process.argv.slice(2))
  .then((code) => process.exit(code))
  .catch((err: unknown) => {
    if (err instanceof AgentExit) {
      console.error(`fabric-agent: ${err.message}`);
      process.exit(err.code);
    }
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(EXIT.CONFIG);
    }
    console.error(err);
    process.exit(EXIT.FAILURE);
  });
