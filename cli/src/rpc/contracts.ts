import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createFileRegistry, fromBinary, type DescService, type FileRegistry } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { CliError } from "../cli-error.js";
import { EXIT } from "../exit-codes.js";

/**
 * The descriptor set `npm run generate` writes next to the generated TypeScript (`buf build`, with source
 * info, so proto comments become help text). The CLI runs from this repository's sources, so the path is
 * relative to this file.
 */
const DESCRIPTOR_SET_PATH = fileURLToPath(new URL("../../../proto/gen/descriptors.binpb", import.meta.url));

/** A Fabric gRPC service and the command group it becomes (`fabric <group> <method>`). */
export interface ServiceContract {
  group: string;
  service: DescService;
}

export interface Contracts {
  registry: FileRegistry;
  services: ServiceContract[];
}

/** Reads the descriptor set and picks out every Fabric service (package `fabric.<area>.v<n>`). */
export function loadContracts(path = DESCRIPTOR_SET_PATH): Contracts {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch {
    throw new CliError(
      EXIT.failure,
      `the contract descriptor set ${path} is missing`,
      "run `npm run generate` at the repository root (it runs `buf generate` and `buf build`)",
    );
  }
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, bytes));
  const services: ServiceContract[] = [];
  for (const file of registry.files) {
    const area = /^fabric\.([a-z0-9_]+)\.v\d+$/.exec(file.proto.package)?.[1];
    if (!area) continue;
    for (const service of file.services) services.push({ group: groupName(area, service.name), service });
  }
  return { registry, services };
}

/**
 * `fabric.ca.v1.CaService` → `ca`. A service not named after its package area keeps its own name
 * (`fabric.registry.v1.AuditService` → `registry-audit`), so groups never collide.
 */
function groupName(area: string, serviceName: string): string {
  const base = kebabCase(serviceName.replace(/Service$/, ""));
  const areaKebab = area.replace(/_/g, "-");
  return base === areaKebab ? areaKebab : `${areaKebab}-${base}`;
}

/** `GetTrustBundle` → `get-trust-bundle`; `cluster_id` → `cluster-id`. */
export function kebabCase(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, "$1-$2")
    .replace(/([A-Z]+)([A-Z][a-z])/g, "$1-$2")
    .replace(/_/g, "-")
    .toLowerCase();
}
