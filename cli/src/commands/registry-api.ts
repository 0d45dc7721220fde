/**
 * The registry's generated code, loaded only by the commands that call the registry: it is the largest
 * part of the contracts, and every `fabric` invocation should not pay for parsing it.
 */
export async function registryApi() {
  const [service, inventory, workloads, audit, session] = await Promise.all([
    import("@fabric/proto/fabric/registry/v1/registry_pb.js"),
    import("@fabric/proto/fabric/registry/v1/inventory_pb.js"),
    import("@fabric/proto/fabric/registry/v1/workload_pb.js"),
    import("@fabric/proto/fabric/registry/v1/audit_pb.js"),
    import("@fabric/proto/fabric/registry/v1/session_pb.js"),
  ]);
  return { ...service, ...inventory, ...workloads, ...audit, ...session };
}
