// What `fabric up` starts each service with: computed from its ServiceDefinition, only settings it has.
import { describe, expect, it } from "vitest";
import { SERVICE_DEFINITIONS } from "../src/reference/readme-settings.js";
import { serviceEnvNames } from "../src/reference/service-settings.js";
import { SERVICE_START_ORDER, endpointsFor, serviceEnvironment } from "../src/up/launch-plan.js";

const ports = {
  ca: { grpcPort: 17400, httpPort: 17410 },
  enrollment: { grpcPort: 17401, httpPort: 17411 },
  registry: { grpcPort: 17402, httpPort: 17412 },
  router: { grpcPort: 17403, httpPort: 17413 },
};
const definition = (name: string) => SERVICE_DEFINITIONS.find((d) => d.name === name)!;
const context = (host = "127.0.0.1") => ({
  endpoints: endpointsFor(host, ports),
  host,
  trustDomain: "fabric.test",
  databaseUrl: "postgres://db/fabric",
  identityDir: "/ids/x",
  ca: { dir: "/ca", passphrase: { key: "caPassphraseFile", value: "/home/ca-passphrase" } },
});

describe("the launch plan of fabric up", () => {
  it("starts the CA first and the router last", () => {
    expect(SERVICE_START_ORDER).toEqual(["ca", "registry", "enrollment", "router"]);
  });

  it("sets only settings each service declares, peers through the <peer>Url settings it has", () => {
    const envs = Object.fromEntries(
      SERVICE_START_ORDER.map((name) => [name, serviceEnvironment(definition(name), context())]),
    );
    for (const name of SERVICE_START_ORDER) {
      const allowed = serviceEnvNames(definition(name));
      for (const key of Object.keys(envs[name]!)) expect(allowed.has(key), `${name}: ${key}`).toBe(true);
      expect(envs[name]).toMatchObject({
        FABRIC_TRUST_DOMAIN: "fabric.test",
        DATABASE_URL: "postgres://db/fabric",
        FABRIC_GRPC_PORT: String(ports[name as keyof typeof ports].grpcPort),
        FABRIC_IDENTITY_DIR: "/ids/x",
      });
    }
    expect(envs.ca).toMatchObject({
      FABRIC_CA_DIR: "/ca",
      FABRIC_CA_PASSPHRASE_FILE: "/home/ca-passphrase",
      FABRIC_CRL_URL: "http://127.0.0.1:17410/crl",
      FABRIC_OCSP_URL: "http://127.0.0.1:17410/ocsp",
    });
    expect(envs.ca).not.toHaveProperty("FABRIC_CA_URL");
    expect(envs.registry).toMatchObject({ FABRIC_CA_URL: "https://127.0.0.1:17400" });
    expect(envs.registry).not.toHaveProperty("FABRIC_ROUTER_URL");
    expect(envs.router).toMatchObject({ FABRIC_REGISTRY_URL: "https://127.0.0.1:17402" });
    expect(envs.enrollment).toMatchObject({
      FABRIC_REGISTRY_URL: "https://127.0.0.1:17402",
      FABRIC_ROUTER_URL: "https://127.0.0.1:17403",
      FABRIC_PUBLIC_ENROLLMENT_URL: "https://127.0.0.1:17401",
    });
  });

  it("advertises loopback when listening on every address", () => {
    const env = serviceEnvironment(definition("registry"), context("0.0.0.0"));
    expect(env).toMatchObject({ FABRIC_HOST: "0.0.0.0", FABRIC_CA_URL: "https://127.0.0.1:17400" });
  });
});
