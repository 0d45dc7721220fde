import { create, toBinary, type DescFile, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import * as v1 from "@fabric/proto/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "@fabric/proto/grpc/reflection/v1alpha/reflection_pb.js";
import { Health } from "@fabric/proto/grpc/health/v1/health_pb.js";
import type { PolicyBinding } from "./authorization.js";

/**
 * gRPC server reflection (v1 and v1alpha) over the generated descriptors, so grpcurl and `buf curl` work
 * without a local schema. connect-node has none of its own.
 */
class DescriptorIndex {
  readonly serviceNames: string[];
  private readonly files = new Map<string, DescFile>();
  private readonly symbols = new Map<string, DescFile>();

  constructor(services: DescService[]) {
    this.serviceNames = services.map((s) => s.typeName);
    for (const s of services) this.addFile(s.file);
  }

  private addFile(file: DescFile): void {
    if (this.files.has(file.name)) return;
    this.files.set(file.name, file);
    const add = (name: string) => this.symbols.set(name, file);
    for (const service of file.services) {
      add(service.typeName);
      for (const m of service.methods) add(`${service.typeName}.${m.name}`);
    }
    const addMessage = (m: DescFile["messages"][number]): void => {
      add(m.typeName);
      m.nestedMessages.forEach(addMessage);
      m.nestedEnums.forEach((e) => add(e.typeName));
    };
    file.messages.forEach(addMessage);
    file.enums.forEach((e) => add(e.typeName));
    file.dependencies.forEach((d) => this.addFile(d));
  }

  /** The file and all it depends on, serialized, the file itself first. */
  descriptorsFor(file: DescFile): Uint8Array[] {
    const seen = new Set<string>();
    const out: Uint8Array[] = [];
    const visit = (f: DescFile) => {
      if (seen.has(f.name)) return;
      seen.add(f.name);
      out.push(toBinary(FileDescriptorProtoSchema, f.proto));
      f.dependencies.forEach(visit);
    };
    visit(file);
    return out;
  }

  fileByName(name: string): DescFile | undefined {
    return this.files.get(name);
  }

  fileBySymbol(symbol: string): DescFile | undefined {
    return this.symbols.get(symbol.replace(/^\./, ""));
  }
}

type Request = v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest;

function answer(index: DescriptorIndex, req: Request) {
  const r = req.messageRequest;
  const notFound = (what: string) => ({
    case: "errorResponse" as const,
    value: { errorCode: 5, errorMessage: `${what} not found` },
  });
  const files = (file: DescFile | undefined, what: string) =>
    file
      ? {
          case: "fileDescriptorResponse" as const,
          value: { fileDescriptorProto: index.descriptorsFor(file) },
        }
      : notFound(what);
  switch (r.case) {
    case "listServices":
      return {
        case: "listServicesResponse" as const,
        value: { service: index.serviceNames.map((name) => ({ name })) },
      };
    case "fileByFilename":
      return files(index.fileByName(r.value), `file "${r.value}"`);
    case "fileContainingSymbol":
      return files(index.fileBySymbol(r.value), `symbol "${r.value}"`);
    case "fileContainingExtension":
      return notFound(`extension ${r.value.extensionNumber} of "${r.value.containingType}"`);
    case "allExtensionNumbersOfType":
      return notFound(`extensions of "${r.value}"`);
    default:
      return {
        case: "errorResponse" as const,
        value: { errorCode: 3, errorMessage: "empty reflection request" },
      };
  }
}

/**
 * Reflection is a bidi stream the caller keeps open as long as it likes, so (like health Watch) it needs
 * an enrolled identity of any kind; grpcurl and `buf curl` pass one with their certificate flags.
 */
export const REFLECTION_POLICIES: PolicyBinding[] = [v1.ServerReflection, v1alpha.ServerReflection].map(
  (service) => ({
    service,
    policy: { serverReflectionInfo: { authenticated: true } },
  }),
);

/** Registers both reflection versions over the given services' descriptors. */
export function registerReflectionService(router: ConnectRouter, services: DescService[]): void {
  const index = new DescriptorIndex([...services, Health, v1.ServerReflection]);
  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        yield create(v1.ServerReflectionResponseSchema, {
          validHost: req.host,
          originalRequest: req,
          messageResponse: answer(index, req),
        });
      }
    },
  });
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        yield create(v1alpha.ServerReflectionResponseSchema, {
          validHost: req.host,
          originalRequest: req,
          messageResponse: answer(index, req),
        });
      }
    },
  });
}
