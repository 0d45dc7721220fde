// The generated layer covers the contracts completely: walks every service, RPC and request field in the
// descriptor set and checks each has its command, flag and help text — so adding an RPC to a .proto needs
// no hand-written CLI code, and a command cannot silently go missing.
import { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { RouterService } from "@fabric/proto/fabric/router/v1/router_pb.js";
import { beforeAll, describe, expect, it } from "vitest";
import type { CommandTree } from "../src/command.js";
import { buildCommandTree } from "../src/commands/index.js";
import { GLOBAL_FLAG_NAMES } from "../src/global-flags.js";
import { commentOf } from "../src/rpc/comments.js";
import { kebabCase, loadContracts, type Contracts } from "../src/rpc/contracts.js";
import type { FieldFlag } from "../src/rpc/request-flags.js";

let contracts: Contracts;
let tree: CommandTree;

beforeAll(() => {
  contracts = loadContracts();
  tree = buildCommandTree(contracts);
});

describe("the descriptor set", () => {
  it("holds the four Fabric services, as ca, enrollment, registry and router", () => {
    expect(contracts.services.map((s) => [s.group, s.service.typeName])).toEqual([
      ["ca", "fabric.ca.v1.CaService"],
      ["enrollment", "fabric.enrollment.v1.EnrollmentService"],
      ["registry", "fabric.registry.v1.RegistryService"],
      ["router", "fabric.router.v1.RouterService"],
    ]);
  });

  it("matches the generated TypeScript (it is regenerated with it)", () => {
    for (const generated of [CaService, EnrollmentService, RegistryService, RouterService]) {
      const described = contracts.services.find((s) => s.service.typeName === generated.typeName)!.service;
      expect(described.methods.map((m) => [m.name, m.methodKind, m.input.typeName])).toEqual(
        generated.methods.map((m) => [m.name, m.methodKind, m.input.typeName]),
      );
      for (const method of generated.methods) {
        const fields = described.methods.find((m) => m.name === method.name)!.input.fields;
        expect(
          fields.map((f) => f.name),
          method.name,
        ).toEqual(method.input.fields.map((f) => f.name));
      }
    }
  });

  it("carries the proto comments", () => {
    const ca = contracts.services.find((s) => s.group === "ca")!.service;
    expect(commentOf(ca)).toMatch(/^CaService issues and revokes Fabric identities\./);
    expect(commentOf(ca.methods.find((m) => m.name === "Sign")!)).toContain(
      "Callable by: the enrollment service",
    );
  });
});

describe("every RPC is a command", () => {
  it("has a group per service with help", () => {
    for (const { group } of contracts.services) {
      const node = tree.find([group])!;
      expect(node.group?.summary, group).not.toBe("");
      expect(node.group?.help, group).not.toBe("");
    }
  });

  it("has `fabric <service> <method>` with a summary, help, and one flag with help per request field", () => {
    let rpcs = 0;
    let fields = 0;
    for (const { group, service } of contracts.services) {
      for (const method of service.methods) {
        rpcs++;
        const path = [group, kebabCase(method.name)];
        const command = tree.find(path)?.command;
        expect(command, path.join(" ")).toBeDefined();
        expect(command!.summary, path.join(" ")).not.toBe("");
        expect(command!.help, path.join(" ")).toContain(commentOf(method).split("\n")[0]);
        expect(command!.server).toBe(group);
        expect(command!.identity).toBe("check");
        for (const field of method.input.fields) {
          fields++;
          const flag = command!.flags.find((f) => (f as FieldFlag).field === field);
          expect(flag, `${path.join(" ")}: ${field.name}`).toBeDefined();
          const comment = commentOf(field).replace(/\s+/g, " ").trim();
          expect(comment, `${method.input.typeName}.${field.name} has no comment`).not.toBe("");
          expect(flag!.help, `${path.join(" ")} --${flag!.name}`).toContain(comment);
        }
        expect(command!.flags.some((f) => f.name === "json")).toBe(true);
      }
    }
    // Enough to know the walk saw the whole contract, not an empty set.
    expect(rpcs).toBeGreaterThanOrEqual(59);
    expect(fields).toBeGreaterThan(150);
  });

  it("never gives two flags of a command the same name, nor shadows a global flag", () => {
    for (const command of tree.commands()) {
      const names = command.flags.map((f) => f.name);
      expect(new Set(names).size, command.path.join(" ")).toBe(names.length);
      for (const name of names)
        expect(GLOBAL_FLAG_NAMES.has(name), `${command.path.join(" ")} --${name}`).toBe(false);
    }
  });

  it("uses names fit for a shell: kebab-case words", () => {
    for (const command of tree.commands()) {
      for (const word of command.path) expect(word).toMatch(/^[a-z][a-z0-9-]*$/);
      for (const flag of command.flags) expect(flag.name).toMatch(/^[a-z][a-z0-9-]*$/);
    }
    expect(kebabCase("GetTrustBundle")).toBe("get-trust-bundle");
    expect(kebabCase("ListOrgEgressPoints")).toBe("list-org-egress-points");
    expect(kebabCase("resume_from_version")).toBe("resume-from-version");
  });
});
