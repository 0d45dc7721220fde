// Flags → request messages, for every kind of field a request can have (unit: no process, no server).
import { create, createFileRegistry, type DescMessage, type Message } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  FileDescriptorProtoSchema,
  file_google_protobuf_duration,
  file_google_protobuf_timestamp,
  timestampDate,
  type Duration,
  type Timestamp,
} from "@bufbuild/protobuf/wkt";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { beforeAll, describe, expect, it } from "vitest";
import { CliError } from "../src/cli-error.js";
import { GLOBAL_FLAGS, GLOBAL_FLAG_NAMES } from "../src/global-flags.js";
import { parseFlags } from "../src/parse-flags.js";
import { loadContracts, type Contracts } from "../src/rpc/contracts.js";
import { buildRequest, fieldFlags, JSON_FLAG } from "../src/rpc/request-flags.js";

const TAKEN = new Set([...GLOBAL_FLAG_NAMES, JSON_FLAG.name]);

/**
 * A message with every field kind protobuf has, including ones Fabric's requests do not use yet (64-bit,
 * floating point, repeated enums and messages, non-string maps, a field named like a global flag).
 */
function kitchenSink(): DescMessage {
  const field = (name: string, number: number, type: Type, extra: Record<string, unknown> = {}) => ({
    name,
    number,
    type,
    label: Label.OPTIONAL,
    jsonName: name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()),
    ...extra,
  });
  const repeated = { label: Label.REPEATED };
  const mapEntry = (name: string, valueType: Type, typeName?: string) => ({
    name,
    field: [field("key", 1, Type.STRING), field("value", 2, valueType, typeName ? { typeName } : {})],
    options: { mapEntry: true },
  });
  const file = create(FileDescriptorProtoSchema, {
    name: "cli_test.proto",
    package: "clitest",
    syntax: "proto3",
    dependency: ["google/protobuf/duration.proto", "google/protobuf/timestamp.proto"],
    enumType: [
      {
        name: "Color",
        value: [
          { name: "COLOR_UNSPECIFIED", number: 0 },
          { name: "COLOR_DARK_RED", number: 1 },
          { name: "COLOR_BLUE", number: 2 },
        ],
      },
    ],
    messageType: [
      { name: "Item", field: [field("name", 1, Type.STRING)] },
      {
        name: "Sink",
        oneofDecl: [{ name: "choice" }],
        nestedType: [
          mapEntry("LabelsEntry", Type.STRING),
          mapEntry("CountsEntry", Type.INT32),
          mapEntry("ShadesEntry", Type.ENUM, ".clitest.Color"),
        ],
        field: [
          field("text", 1, Type.STRING),
          field("i32", 2, Type.INT32),
          field("u32", 3, Type.UINT32),
          field("i64", 4, Type.INT64),
          field("u64", 5, Type.UINT64),
          field("s32", 6, Type.SINT32),
          field("dbl", 7, Type.DOUBLE),
          field("flt", 8, Type.FLOAT),
          field("on", 9, Type.BOOL),
          field("raw", 10, Type.BYTES),
          field("color", 11, Type.ENUM, { typeName: ".clitest.Color" }),
          field("colors", 12, Type.ENUM, { typeName: ".clitest.Color", ...repeated }),
          field("tags", 13, Type.STRING, repeated),
          field("nums", 14, Type.INT32, repeated),
          field("ttl", 15, Type.MESSAGE, { typeName: ".google.protobuf.Duration" }),
          field("at", 16, Type.MESSAGE, { typeName: ".google.protobuf.Timestamp" }),
          field("item", 17, Type.MESSAGE, { typeName: ".clitest.Item" }),
          field("items", 18, Type.MESSAGE, { typeName: ".clitest.Item", ...repeated }),
          field("labels", 19, Type.MESSAGE, { typeName: ".clitest.Sink.LabelsEntry", ...repeated }),
          field("counts", 20, Type.MESSAGE, { typeName: ".clitest.Sink.CountsEntry", ...repeated }),
          field("shades", 21, Type.MESSAGE, { typeName: ".clitest.Sink.ShadesEntry", ...repeated }),
          field("first", 22, Type.STRING, { oneofIndex: 0 }),
          field("second", 23, Type.MESSAGE, { typeName: ".clitest.Item", oneofIndex: 0 }),
          field("switches", 24, Type.BOOL, repeated),
          field("context", 25, Type.STRING),
        ],
      },
    ],
  });
  const registry = createFileRegistry(file, (name) =>
    name === "google/protobuf/duration.proto"
      ? file_google_protobuf_duration
      : name === "google/protobuf/timestamp.proto"
        ? file_google_protobuf_timestamp
        : undefined,
  );
  return registry.getMessage("clitest.Sink")!;
}

// The generated message type for the kitchen sink is not known statically; fields are read by name.
type Fields = Record<string, unknown>;

let sink: DescMessage;
let contracts: Contracts;

beforeAll(() => {
  sink = kitchenSink();
  contracts = loadContracts();
});

/** Parses a command line the way `fabric` does and builds the request. */
function request(desc: DescMessage, args: string[]): Fields {
  const flags = fieldFlags(desc, TAKEN);
  const { values } = parseFlags(args, [...GLOBAL_FLAGS, ...flags, JSON_FLAG]);
  return buildRequest(desc, flags, values, contracts.registry) as unknown as Fields;
}

function usage(desc: DescMessage, args: string[]): string {
  try {
    request(desc, args);
  } catch (err) {
    if (err instanceof CliError && err.exitCode === 2) return err.message;
    throw err;
  }
  throw new Error(`expected a usage error for ${args.join(" ")}`);
}

describe("flags for every field kind", () => {
  it("names flags after the fields and moves a global flag's name aside", () => {
    const names = fieldFlags(sink, TAKEN).map((f) => f.name);
    expect(names).toContain("i32");
    expect(names).toContain("request-context");
    expect(names).not.toContain("context");
  });

  it("converts scalars: strings, 32- and 64-bit integers, floating point, bools and bytes", () => {
    const msg = request(sink, [
      "--text",
      "hello, world",
      "--i32",
      "-7",
      "--u32",
      "4294967295",
      "--i64",
      "-9223372036854775808",
      "--u64",
      "18446744073709551615",
      "--s32",
      "-3",
      "--dbl",
      "2.5",
      "--flt",
      "0.25",
      "--on",
      "--raw",
      "AQID",
      "--request-context",
      "ctx",
    ]);
    expect(msg).toMatchObject({
      text: "hello, world",
      i32: -7,
      u32: 4294967295,
      i64: -9223372036854775808n,
      u64: 18446744073709551615n,
      s32: -3,
      dbl: 2.5,
      flt: 0.25,
      on: true,
      raw: new Uint8Array([1, 2, 3]),
      context: "ctx",
    });
  });

  it("takes enums by short name, with dashes, or by full name", () => {
    expect(request(sink, ["--color", "dark-red"]).color).toBe(1);
    expect(request(sink, ["--color", "DARK_RED"]).color).toBe(1);
    expect(request(sink, ["--color", "COLOR_BLUE"]).color).toBe(2);
    expect(request(sink, ["--colors", "blue,dark_red", "--colors", "blue"]).colors).toEqual([2, 1, 2]);
  });

  it("takes repeated fields as repeated flags and comma-separated values", () => {
    const msg = request(sink, ["--tags", "a,b", "--tags", "c", "--nums", "1,2", "--switches", "true,false"]);
    expect(msg).toMatchObject({ tags: ["a", "b", "c"], nums: [1, 2], switches: [true, false] });
  });

  it("takes durations like 30s, 24h and 1h30m, and RFC 3339 times", () => {
    expect((request(sink, ["--ttl", "1h30m"]).ttl as Duration).seconds).toBe(5400n);
    expect((request(sink, ["--ttl", "500ms"]).ttl as Duration).nanos).toBe(500_000_000);
    expect((request(sink, ["--ttl", "7d"]).ttl as Duration).seconds).toBe(604800n);
    const at = request(sink, ["--at", "2030-01-02T03:04:05.5+01:00"]).at as Timestamp;
    expect(timestampDate(at).toISOString()).toBe("2030-01-02T02:04:05.500Z");
  });

  it("takes messages as proto JSON and maps as key=value or a JSON object", () => {
    const msg = request(sink, [
      "--item",
      '{"name": "one"}',
      "--items",
      '{"name": "a"}',
      "--items",
      '[{"name": "b"}, {"name": "c"}]',
      "--labels",
      "site=kazan=dc1",
      "--labels",
      '{"env": "dev"}',
      "--counts",
      "x=3",
      "--shades",
      "sky=blue",
    ]);
    expect((msg.item as Fields).name).toBe("one");
    expect((msg.items as Fields[]).map((i) => i.name)).toEqual(["a", "b", "c"]);
    expect(msg.labels).toEqual({ site: "kazan=dc1", env: "dev" });
    expect(msg.counts).toEqual({ x: 3 });
    expect(msg.shades).toEqual({ sky: 2 });
  });

  it("sets a oneof from either member, and refuses both", () => {
    expect(request(sink, ["--first", "f"]).choice).toEqual({ case: "first", value: "f" });
    expect((request(sink, ["--second", '{"name": "s"}']).choice as { case: string }).case).toBe("second");
    expect(usage(sink, ["--first", "f", "--second", "{}"])).toContain('both set "choice"');
  });

  it("starts from --json and lets flags override its fields, whichever name --json used", () => {
    const msg = request(sink, [
      "--json",
      '{"text": "json", "i32": 1, "first": "from-json", "u64": "5", "tags": ["x"]}',
      "--i32",
      "2",
      "--second",
      '{"name": "flag"}',
      "--tags",
      "y",
    ]);
    expect(msg).toMatchObject({ text: "json", i32: 2, u64: 5n, tags: ["y"] });
    expect(msg.choice).toEqual({ case: "second", value: expect.objectContaining({ name: "flag" }) });
    const token = contracts.registry.getMessage("fabric.enrollment.v1.CreateJoinTokenRequest")!;
    expect(request(token, ["--json", '{"cluster_id": "proto-name"}', "--cluster-id", "flag"]).clusterId).toBe(
      "flag",
    );
  });
});

describe("refusing bad values with the flag and what it takes", () => {
  it.each([
    [["--i32", "2147483648"], "--i32 takes a whole number from -2147483648 to 2147483647 (int32)"],
    [["--u32", "-1"], "--u32 takes a whole number from 0 to 4294967295"],
    [["--u64", "1.5"], "--u64 takes a whole number"],
    [["--dbl", "lots"], '--dbl takes a number, got "lots"'],
    [["--switches", "yes"], "--switches takes true or false"],
    [["--raw", "not base64!"], "--raw takes base64-encoded bytes"],
    [["--color", "green"], '--color: "green" is not one of dark_red, blue'],
    [["--ttl", "1 hour"], '--ttl: "1 hour" is not a duration; use e.g. 30s, 15m, 24h or 7d'],
    [["--at", "yesterday"], '--at: "yesterday" is not an RFC 3339 time'],
    [["--labels", "novalue"], '--labels takes key=value (got an entry without "=" or key)'],
    [["--json", "[1]"], "--json must be a JSON object"],
    [["--json", '{"nope": 1}'], 'key "nope" is unknown'],
  ])("%j", (args, message) => {
    expect(usage(sink, args)).toContain(message);
  });

  it("never echoes the value of a free-form or JSON field (it may be a secret)", () => {
    const secret = "s3cr3t-123456";
    for (const args of [
      ["--item", `{"name": ${secret}}`],
      ["--json", `{"text": ${secret}`],
      ["--json", `{"text": 123456}`],
    ]) {
      const message = usage(sink, args);
      expect(message).not.toContain(secret);
      expect(message).not.toContain("123456");
    }
  });

  it("leaves unknown flags to the parser, which names them", () => {
    expect(() => request(sink, ["--colour", "blue"])).toThrow(/--colour/);
  });
});

describe("Fabric's own requests", () => {
  const message = (typeName: string) => contracts.registry.getMessage(typeName)!;
  const real = (typeName: string, args: string[]) =>
    request(message(typeName), args) as unknown as Message & Fields;

  it("builds CreateJoinToken, ListCertificates and Revoke requests", () => {
    const token = real("fabric.enrollment.v1.CreateJoinTokenRequest", [
      "--cluster-id",
      "c1",
      "--allowed-roles",
      "entry-node,relay-node",
      "--ttl",
      "24h",
      "--auto-approve",
    ]);
    expect(token).toMatchObject({
      clusterId: "c1",
      allowedRoles: ["entry-node", "relay-node"],
      autoApprove: true,
    });
    expect((token.ttl as Duration).seconds).toBe(86400n);
    expect(real("fabric.ca.v1.ListCertificatesRequest", ["--principal-kind", "admin"]).principalKind).toBe(
      PrincipalKind.ADMIN,
    );
    const revoke = real("fabric.ca.v1.RevokeRequest", [
      "--principal",
      '{"kind": "PRINCIPAL_KIND_NODE", "id": "n-1"}',
    ]);
    expect(revoke.target).toEqual({
      case: "principal",
      value: expect.objectContaining({ id: "n-1", kind: 1 }),
    });
  });

  it("builds requests with maps, times and bytes", () => {
    expect(
      real("fabric.registry.v1.CreateClusterRequest", ["--labels", "a=1", "--labels", "b=2"]).labels,
    ).toEqual({
      a: "1",
      b: "2",
    });
    const since = real("fabric.registry.v1.ListAuditRequest", ["--since", "2030-01-01T00:00:00Z"])
      .since as Timestamp;
    expect(timestampDate(since).toISOString()).toBe("2030-01-01T00:00:00.000Z");
    expect(
      real("fabric.enrollment.v1.WaitForApprovalRequest", ["--signature", "3q2+7w=="]).signature,
    ).toEqual(new Uint8Array([0xde, 0xad, 0xbe, 0xef]));
  });
});
