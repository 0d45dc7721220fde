// Every kind of caller a Fabric service can meet, as real credentials from the harness's CA: no
// certificate at all, a node, a developer, each control-plane service, and an admin of each role.
import type { DescService } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  SERVICE_NAMES,
  buildSpiffeId,
  createRpcClient,
  fromPem,
  principalFromCertificate,
  type Principal,
  type ServiceName,
  type TlsCredentials,
} from "@fabric/platform";
import type { Fabric } from "../../harness/fabric.js";

export interface Caller {
  /** e.g. `anonymous`, `node`, `service/ca`, `admin/org-admin`. */
  label: string;
  /** Undefined for the anonymous caller (no client certificate). */
  principal: Principal | undefined;
  credentials: TlsCredentials | Pick<TlsCredentials, "caBundlePem">;
}

/** The cluster and organization the scoped callers belong to. */
export const HOME = { cluster: "c1", organization: "o1" } as const;

export async function everyCaller(fabric: Fabric): Promise<Caller[]> {
  const identified = async (label: string, credentials: TlsCredentials): Promise<Caller> => ({
    label,
    credentials,
    principal: principalFromCertificate(
      fromPem(credentials.certificatePem, "CERTIFICATE"),
      fabric.trustDomain,
    ),
  });
  const services = SERVICE_NAMES.map((name) => identified(`service/${name}`, fabric.serviceIdentity(name)));
  return Promise.all([
    { label: "anonymous", principal: undefined, credentials: { caBundlePem: fabric.admin.caBundlePem } },
    identified(
      "node",
      await fabric.issue({ kind: "node", id: "walk-node", cluster: HOME.cluster, grant: "relay-node" }),
    ),
    identified(
      "user",
      await fabric.issue({
        kind: "user",
        id: "walk-dev",
        organization: HOME.organization,
        grant: "developer",
      }),
    ),
    ...services,
    identified("admin/platform-admin", fabric.admin),
    identified(
      "admin/cluster-admin",
      await fabric.issue({
        kind: "admin",
        id: "walk-cluster-admin",
        cluster: HOME.cluster,
        grant: "cluster-admin",
      }),
    ),
    identified(
      "admin/org-admin",
      await fabric.issue({
        kind: "admin",
        id: "walk-org-admin",
        organization: HOME.organization,
        grant: "org-admin",
      }),
    ),
  ]);
}

/** A client of `target` as `credentials`, checking the server's SPIFFE ID, without retries. */
export function clientAs<S extends DescService>(
  fabric: Fabric,
  service: S,
  target: ServiceName,
  credentials: TlsCredentials | Pick<TlsCredentials, "caBundlePem">,
): Client<S> {
  return createRpcClient(service, {
    url: fabric.urls[target]!.grpc,
    credentials,
    expectServerId: buildSpiffeId({ trustDomain: fabric.trustDomain, kind: "service", id: target }),
    retries: 0,
    timeoutMs: 30_000,
  });
}
