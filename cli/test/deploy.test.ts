// The deployment files, checked statically (no Docker engine here): every environment variable they set
// is a setting of the process it goes to (computed from the ServiceDefinitions with the platform's
// envNameOf), every port is that service's, every file they copy or run exists, images run as non-root,
// Kubernetes probes hit /healthz and /readyz on the plain port, and the agent's unit does not restart
// an agent that must re-enroll.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { envNameOf, type ServiceName } from "@fabric/platform";
import { describe, expect, it } from "vitest";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { agentSettings } from "../../agent/src/config.js";
import { SERVICE_DEFINITIONS } from "../src/reference/readme-settings.js";
import { serviceEnvNames } from "../src/reference/service-settings.js";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const DEPLOY = join(REPO, "deploy");
const SERVICES = SERVICE_DEFINITIONS.map((d) => d.name);
const definition = (name: ServiceName) => SERVICE_DEFINITIONS.find((d) => d.name === name)!;
const envOfService = (name: ServiceName) => serviceEnvNames(definition(name));
/** What fabric-agent reads: its settings, plus its state directory and the join token. */
const AGENT_ENV = new Set([
  ...Object.keys(agentSettings.shape).map(envNameOf),
  "FABRIC_AGENT_HOME",
  "FABRIC_JOIN_TOKEN",
  "FABRIC_CONFIG",
]);
/** What the fabric CLI reads in the compose file's ca-init job. */
const CLI_ENV = new Set(["FABRIC_HOME", "FABRIC_CA_PASSPHRASE", "FABRIC_CA_PASSPHRASE_FILE"]);

type Json = Record<string, unknown>;
const obj = (v: unknown) => (v ?? {}) as Json;
const arr = (v: unknown) => (v ?? []) as unknown[];

interface Instruction {
  op: string;
  args: string;
}

/** A Dockerfile's instructions, continuation lines joined, comments dropped. */
function dockerfile(path: string): Instruction[] {
  const joined = readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => !l.trimStart().startsWith("#"))
    .join("\n")
    .replace(/\\\n/g, " ");
  return joined
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "")
    .map((l) => {
      const [op, ...rest] = l.split(/\s+/);
      return { op: op!.toUpperCase(), args: rest.join(" ") };
    });
}

/** The final stage's instructions (after the last FROM). */
function finalStage(instructions: Instruction[]): Instruction[] {
  const last = instructions.map((i) => i.op).lastIndexOf("FROM");
  return instructions.slice(last + 1);
}

function envNamesOf(instructions: Instruction[]): string[] {
  return instructions
    .filter((i) => i.op === "ENV")
    .flatMap((i) => [...i.args.matchAll(/([A-Z_][A-Z0-9_]*)=/g)].map((m) => m[1]!));
}

function execForm(args: string): string[] {
  return JSON.parse(args) as string[];
}

describe("Dockerfiles", () => {
  const images = [...SERVICES, "agent", "fabric"];

  it("exist for every service, the agent and the CLI, multi-stage, running as a non-root user", () => {
    for (const name of images) {
      const path = join(DEPLOY, "docker", `${name}.Dockerfile`);
      expect(existsSync(path), path).toBe(true);
      const instructions = dockerfile(path);
      expect(instructions.filter((i) => i.op === "FROM").length, name).toBeGreaterThanOrEqual(2);
      const user = finalStage(instructions)
        .filter((i) => i.op === "USER")
        .at(-1)?.args;
      expect(user, `${name} sets a USER`).toBeDefined();
      expect(["root", "0", "0:0"]).not.toContain(user);
    }
  });

  it("copy only files that exist in the repository", () => {
    for (const name of images) {
      for (const i of dockerfile(join(DEPLOY, "docker", `${name}.Dockerfile`))) {
        if (i.op !== "COPY" || i.args.startsWith("--from")) continue;
        const parts = i.args.split(/\s+/).filter((p) => !p.startsWith("--"));
        for (const source of parts.slice(0, -1)) {
          expect(existsSync(join(REPO, source)), `${name}: COPY ${source}`).toBe(true);
        }
      }
    }
  });

  it("set only the service's settings, expose its ports and run its main.ts", () => {
    for (const name of SERVICES) {
      const stage = finalStage(dockerfile(join(DEPLOY, "docker", `${name}.Dockerfile`)));
      const allowed = envOfService(name);
      for (const env of envNamesOf(stage).filter((e) => e !== "NODE_ENV")) {
        expect(allowed.has(env), `${name}.Dockerfile sets ${env}`).toBe(true);
      }
      const { grpcPort, httpPort } = definition(name).defaults;
      expect(
        stage
          .find((i) => i.op === "EXPOSE")
          ?.args.split(/\s+/)
          .map(Number),
      ).toEqual([grpcPort, httpPort]);
      const env = Object.fromEntries(
        stage
          .filter((i) => i.op === "ENV")
          .flatMap((i) => [...i.args.matchAll(/([A-Z_][A-Z0-9_]*)=(\S+)/g)].map((m) => [m[1], m[2]])),
      );
      expect(env[envNameOf("grpcPort")]).toBe(String(grpcPort));
      expect(env[envNameOf("httpPort")]).toBe(String(httpPort));
      const cmd = execForm(stage.find((i) => i.op === "CMD")!.args);
      expect(cmd).toEqual(["node", "--import", "tsx", `services/${name}/src/main.ts`]);
      expect(existsSync(join(REPO, cmd.at(-1)!))).toBe(true);
      expect(stage.find((i) => i.op === "HEALTHCHECK")?.args).toContain("/healthz");
    }
  });

  it("start the agent and the CLI from their executables", () => {
    const agent = finalStage(dockerfile(join(DEPLOY, "docker", "agent.Dockerfile")));
    const agentEntry = execForm(agent.find((i) => i.op === "ENTRYPOINT")!.args);
    expect(existsSync(join(REPO, agentEntry[1]!))).toBe(true);
    for (const env of envNamesOf(agent).filter((e) => e !== "NODE_ENV"))
      expect(AGENT_ENV.has(env), env).toBe(true);
    const cli = finalStage(dockerfile(join(DEPLOY, "docker", "fabric.Dockerfile")));
    expect(existsSync(join(REPO, execForm(cli.find((i) => i.op === "ENTRYPOINT")!.args)[1]!))).toBe(true);
  });
});

describe("compose.yaml", () => {
  const compose = parseYaml(readFileSync(join(DEPLOY, "compose.yaml"), "utf8"), { merge: true }) as Json;
  const services = obj(compose.services);

  it("runs Postgres, the four services and one agent, each built from its Dockerfile", () => {
    expect(Object.keys(services)).toEqual(expect.arrayContaining(["postgres", ...SERVICES, "agent"]));
    for (const [name, service] of Object.entries(services)) {
      const build = obj(obj(service).build);
      if (!build.dockerfile) continue;
      expect(existsSync(join(DEPLOY, String(build.context), String(build.dockerfile))), name).toBe(true);
    }
    expect(obj(obj(services.registry).build).dockerfile).toBe("deploy/docker/registry.Dockerfile");
  });

  it("gives each process only settings it has, and peer URLs on the peers' ports", () => {
    const allowedFor = (name: string): Set<string> =>
      (SERVICES as string[]).includes(name)
        ? envOfService(name as ServiceName)
        : name === "agent"
          ? AGENT_ENV
          : name === "ca-init"
            ? CLI_ENV
            : new Set(Object.keys(obj(obj(services[name]).environment)));
    for (const [name, service] of Object.entries(services)) {
      const env = obj(obj(service).environment);
      for (const [key, value] of Object.entries(env)) {
        expect(allowedFor(name).has(key), `${name}: ${key}`).toBe(true);
        // https://<peer>:<port> must be that peer's gRPC port.
        const peer = /^https:\/\/([a-z]+):(\d+)$/.exec(String(value));
        if (peer && (SERVICES as string[]).includes(peer[1]!)) {
          expect(Number(peer[2]), `${name}: ${key}`).toBe(
            definition(peer[1] as ServiceName).defaults.grpcPort,
          );
        }
      }
    }
    for (const name of SERVICES) {
      const env = obj(obj(services[name]).environment);
      expect(env.DATABASE_URL, name).toMatch(/@postgres:5432\//);
      expect(env.FABRIC_IDENTITY_DIR, name).toBeTruthy();
      if (name !== "ca") expect(env.FABRIC_CA_URL, name).toBe("https://ca:7400");
    }
  });

  it("publishes each service's ports and refers only to declared services, volumes and secrets", () => {
    for (const name of SERVICES) {
      const { grpcPort, httpPort } = definition(name).defaults;
      expect(arr(obj(services[name]).ports)).toEqual([`${grpcPort}:${grpcPort}`, `${httpPort}:${httpPort}`]);
    }
    const volumes = Object.keys(obj(compose.volumes));
    const secrets = Object.keys(obj(compose.secrets));
    for (const [name, service] of Object.entries(services)) {
      for (const dep of Object.keys(obj(obj(service).depends_on)))
        expect(Object.keys(services), name).toContain(dep);
      for (const s of arr(obj(service).secrets)) expect(secrets, name).toContain(s);
      for (const v of arr(obj(service).volumes)) {
        const source = typeof v === "string" ? v.split(":")[0] : String(obj(v).source);
        expect(volumes, `${name}: volume ${source}`).toContain(source);
      }
    }
  });
});

describe("Kubernetes manifests", () => {
  const dir = join(DEPLOY, "kubernetes");
  const docs = readdirSync(dir)
    .filter((f) => f.endsWith(".yaml"))
    .flatMap((f) => parseAllDocuments(readFileSync(join(dir, f), "utf8")).map((d) => d.toJS() as Json))
    .filter((d) => d && d.kind);
  const ofKind = (kind: string) => docs.filter((d) => d.kind === kind);
  const named = (kind: string, name: string) => ofKind(kind).find((d) => obj(d.metadata).name === name);
  const secretsReadme = readFileSync(join(dir, "README.md"), "utf8");

  it("have a Deployment per service with its ports, settings from its ConfigMap, and non-root pods", () => {
    for (const name of SERVICES) {
      const deployment = named("Deployment", `fabric-${name}`);
      expect(deployment, name).toBeDefined();
      const pod = obj(obj(obj(deployment!.spec).template).spec);
      expect(obj(pod.securityContext).runAsNonRoot).toBe(true);
      const container = arr(pod.containers)
        .map(obj)
        .find((c) => c.name === name)!;
      expect(container, name).toBeDefined();
      expect(String(container.image)).toContain(name);
      const { grpcPort, httpPort } = definition(name).defaults;
      expect(arr(container.ports).map(obj)).toEqual([
        { name: "grpc", containerPort: grpcPort },
        { name: "http", containerPort: httpPort },
      ]);
      expect(obj(container.securityContext)).toMatchObject({
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
      });
      const allowed = envOfService(name);
      const names = arr(container.env).map((e) => String(obj(e).name));
      for (const from of arr(container.envFrom).map(obj)) {
        const configMap = named("ConfigMap", String(obj(from.configMapRef).name));
        expect(configMap, `${name}: ConfigMap ${String(obj(from.configMapRef).name)}`).toBeDefined();
        names.push(...Object.keys(obj(configMap!.data)));
      }
      for (const env of names) expect(allowed.has(env), `${name}: ${env}`).toBe(true);
      for (const required of ["DATABASE_URL", "FABRIC_IDENTITY_DIR", "FABRIC_HOST", "FABRIC_TRUST_DOMAIN"]) {
        expect(names, name).toContain(required);
      }
      if (name !== "ca") expect(names, name).toContain("FABRIC_CA_URL");
    }
  });

  it("probe /healthz (liveness, startup) and /readyz (readiness) on the plain port", () => {
    for (const name of SERVICES) {
      const pod = obj(obj(obj(named("Deployment", `fabric-${name}`)!.spec).template).spec);
      const container = arr(pod.containers)
        .map(obj)
        .find((c) => c.name === name)!;
      expect(obj(obj(container.livenessProbe).httpGet)).toEqual({ path: "/healthz", port: "http" });
      expect(obj(obj(container.startupProbe).httpGet)).toEqual({ path: "/healthz", port: "http" });
      expect(obj(obj(container.readinessProbe).httpGet)).toEqual({ path: "/readyz", port: "http" });
    }
  });

  it("run registry and router with 2+ replicas, with a Service and a PodDisruptionBudget each", () => {
    for (const name of SERVICES) {
      const deployment = named("Deployment", `fabric-${name}`)!;
      const labels = obj(obj(obj(obj(deployment.spec).template).metadata).labels);
      const replicas = Number(obj(deployment.spec).replicas);
      if (name === "registry" || name === "router") expect(replicas, name).toBeGreaterThanOrEqual(2);
      const matches = (selector: Json) => Object.entries(selector).every(([k, v]) => labels[k] === v);
      const service = ofKind("Service").find((s) => matches(obj(obj(s.spec).selector)));
      expect(service, `${name}: Service`).toBeDefined();
      const { grpcPort, httpPort } = definition(name).defaults;
      expect(arr(obj(service!.spec).ports).map((p) => obj(p).port)).toEqual([grpcPort, httpPort]);
      const pdb = ofKind("PodDisruptionBudget").find((p) =>
        matches(obj(obj(obj(p.spec).selector).matchLabels)),
      );
      expect(pdb, `${name}: PodDisruptionBudget`).toBeDefined();
    }
  });

  it("point peers at the peers' Services and ports, and reference only documented Secrets", () => {
    for (const configMap of ofKind("ConfigMap")) {
      for (const [key, value] of Object.entries(obj(configMap.data))) {
        const peer = /^https:\/\/fabric-([a-z]+)\.[a-z-]+\.svc:(\d+)$/.exec(String(value));
        if (!peer) continue;
        expect(SERVICES, key).toContain(peer[1]);
        expect(Number(peer[2]), key).toBe(definition(peer[1] as ServiceName).defaults.grpcPort);
      }
    }
    const secretNames = new Set<string>();
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) return node.forEach(walk);
      if (node && typeof node === "object") {
        const o = node as Json;
        if (typeof o.secretName === "string") secretNames.add(o.secretName);
        if (o.secretKeyRef) secretNames.add(String(obj(o.secretKeyRef).name));
        Object.values(o).forEach(walk);
      }
    };
    walk(docs);
    expect(secretNames.size).toBeGreaterThan(0);
    for (const secret of secretNames) expect(secretsReadme, secret).toContain(`\`${secret}\``);
    expect(secretNames).toContain("fabric-ca");
    expect(secretNames).toContain("fabric-ca-passphrase");
  });
});

describe("the systemd unit of fabric-agent", () => {
  const unit = readFileSync(join(DEPLOY, "systemd", "fabric-agent.service"), "utf8");
  const value = (key: string) => new RegExp(`^${key}=(.*)$`, "m").exec(unit)?.[1];

  it("runs the agent's executable from the installed tree, as its own user", () => {
    const exec = value("ExecStart")!.split(/\s+/);
    expect(exec[0]).toBe("/usr/bin/node");
    expect(exec[1]).toMatch(/^\/opt\/fabric\//);
    expect(existsSync(join(REPO, exec[1]!.replace(/^\/opt\/fabric\//, "")))).toBe(true);
    expect(exec.slice(2)).toEqual(["run"]);
    expect(value("User")).toBe("fabric-agent");
  });

  it("does not restart an agent that must re-enroll (exit 10) or is misconfigured (78)", () => {
    expect(value("Restart")).toBe("on-failure");
    expect(value("RestartPreventExitStatus")!.split(/\s+/)).toEqual(expect.arrayContaining(["10", "78"]));
  });

  it("sets only variables the agent reads", () => {
    for (const line of unit.split("\n").filter((l) => l.startsWith("Environment="))) {
      const name = line.slice("Environment=".length).split("=")[0]!;
      expect(AGENT_ENV.has(name), name).toBe(true);
    }
  });
});
