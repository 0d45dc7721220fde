import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { ConfigError, envNameOf, loadConfig, setting } from "../src/config.js";

const schema = z.object({
  grpcPort: setting.port(7400),
  databaseUrl: setting.url(),
  logLevel: setting.logLevel(),
  autoApprove: setting.bool(false),
});

describe("config loader", () => {
  it("derives environment names from keys", () => {
    expect(envNameOf("grpcPort")).toBe("FABRIC_GRPC_PORT");
    expect(envNameOf("caBundleFile")).toBe("FABRIC_CA_BUNDLE_FILE");
  });

  it("reads the environment, coerces types and applies defaults", () => {
    const config = loadConfig(schema, {
      env: { DATABASE_URL: "postgres://x@127.0.0.1/db", FABRIC_AUTO_APPROVE: "true" },
      aliases: { databaseUrl: "DATABASE_URL" },
    });
    expect(config).toEqual({
      grpcPort: 7400,
      databaseUrl: "postgres://x@127.0.0.1/db",
      logLevel: "info",
      autoApprove: true,
    });
  });

  it("names the setting that is wrong, with the value it got", () => {
    let error: unknown;
    try {
      loadConfig(schema, { env: { FABRIC_GRPC_PORT: "seventy", FABRIC_DATABASE_URL: "postgres://h/db" } });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toContain("FABRIC_GRPC_PORT");
    expect((error as Error).message).toContain('"seventy"');
  });

  it("reports a missing required setting by its environment name", () => {
    expect(() => loadConfig(schema, { env: {} })).toThrow(/FABRIC_DATABASE_URL/);
  });

  it("reads a YAML file, lets the environment override it, and refuses unknown keys", () => {
    const dir = mkdtempSync(join(tmpdir(), "fabric-config-"));
    const file = join(dir, "fabric.yaml");
    writeFileSync(file, "grpcPort: 9000\ndatabaseUrl: postgres://y@127.0.0.1/db\nlogLevel: debug\n");
    const config = loadConfig(schema, { env: { FABRIC_CONFIG: file, FABRIC_LOG_LEVEL: "warn" } });
    expect(config.grpcPort).toBe(9000);
    expect(config.logLevel).toBe("warn");

    writeFileSync(file, "grpcPort: 9000\ndatabaseUrl: postgres://y@127.0.0.1/db\ngrpcProt: 1\n");
    expect(() => loadConfig(schema, { env: { FABRIC_CONFIG: file } })).toThrow(/unknown setting "grpcProt"/);

    writeFileSync(file, "grpcPort: 99999\ndatabaseUrl: postgres://y@127.0.0.1/db\n");
    expect(() => loadConfig(schema, { env: { FABRIC_CONFIG: file } })).toThrow(/fabric\.yaml: grpcPort/);
  });
});

describe("config loader and secrets", () => {
  it("never echoes the value of a rejected secret setting", () => {
    const secretSchema = z.object({ caPassphrase: z.string().min(12) });
    let message = "";
    try {
      loadConfig(secretSchema, { env: { FABRIC_CA_PASSPHRASE: "hunter2" } });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain("FABRIC_CA_PASSPHRASE");
    expect(message).not.toContain("hunter2");
  });
});
