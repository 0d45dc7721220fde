// A stand-in for the CA service in the registry's in-process tests: the RPCs the registry calls
// (WatchRevocations, Revoke, ListCertificates), over real mTLS, with the protocol of ca.proto. Revoking a
// principal records it and streams a principal-wide entry to every watcher, so the registry cuts the
// identity as it would with the real CA; ListCertificates answers from the certificates a test says the CA
// issued (`issued`). Cross-service tests use the real CA through test/harness.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  CaService,
  CertificateInfoSchema,
  CertificateStatus,
  RevokedEntrySchema,
  WatchRevocationsResponseSchema,
  type CertificateInfo,
  type RevokedEntry,
  type RevokeRequest,
} from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import {
  createLogger,
  createRpcServer,
  inspectCertificate,
  serve,
  type RpcServer,
  type TlsCredentials,
} from "@fabric/platform";
import type { TestPki } from "@fabric/platform/testing";

export interface StandInCa {
  url: string;
  /** Revoke requests received, in order. */
  revoked: RevokeRequest[];
  /** While true, Revoke and ListCertificates fail with Unavailable (the CA as seen when it is down). */
  failing: boolean;
  /** Certificates on the CA's record, as ListCertificates returns them. */
  certificates: CertificateInfo[];
  /** Puts an admin certificate on the CA's record, active. */
  issued(credentials: TlsCredentials): void;
  close(): Promise<void>;
}

export async function startStandInCa(pki: TestPki): Promise<StandInCa> {
  const entries: RevokedEntry[] = [];
  const watchers = new Set<(e: RevokedEntry) => void>();
  const state: Omit<StandInCa, "url" | "close"> = {
    revoked: [],
    failing: false,
    certificates: [],
    issued(credentials) {
      const facts = inspectCertificate(credentials.certificatePem);
      state.certificates.push(
        create(CertificateInfoSchema, {
          serial: facts.serialHex,
          principalKind: PrincipalKind.ADMIN,
          principalId: facts.subjectCommonName ?? "",
          clusterId: facts.clusterExtension ?? "",
          organizationId: facts.organization ?? "",
          grants: facts.grant ? [facts.grant] : [],
          spiffeId: facts.spiffeId ?? "",
          notBefore: timestampFromDate(facts.notBefore),
          notAfter: timestampFromDate(facts.notAfter),
          fingerprintSha256: facts.fingerprintSha256,
          status: CertificateStatus.ACTIVE,
        }),
      );
    },
  };
  const server: RpcServer = await createRpcServer({
    name: "ca",
    trustDomain: pki.trustDomain,
    credentials: await pki.issue({ kind: "service", id: "ca" }),
    grpcPort: 0,
    httpPort: 0,
    logger: createLogger({ service: "stand-in-ca", level: "silent" }),
    services: [
      serve(
        CaService,
        {
          revoke(req) {
            if (state.failing) throw new ConnectError("the CA is down", Code.Unavailable);
            state.revoked.push(req);
            const target = req.target.case === "principal" ? req.target.value : undefined;
            const entry = create(RevokedEntrySchema, {
              version: BigInt(entries.length + 1),
              principalKind: target?.kind ?? 0,
              principalId: target?.id ?? "",
              serial: req.target.case === "serial" ? req.target.value : "",
              reason: req.reason,
              revokedAt: timestampFromDate(new Date()),
              notAfter: timestampFromDate(new Date(Date.now() + 86_400_000)),
            });
            entries.push(entry);
            for (const w of watchers) w(entry);
            return { revokedSerials: [`serial-of-${entry.principalId}`], version: entry.version };
          },
          listCertificates(req) {
            if (state.failing) throw new ConnectError("the CA is down", Code.Unavailable);
            return {
              certificates: state.certificates.filter(
                (c) =>
                  (!req.principalId || c.principalId === req.principalId) &&
                  (!req.principalKind || c.principalKind === req.principalKind) &&
                  (!req.status || c.status === req.status),
              ),
              nextPageToken: "",
            };
          },
          async *watchRevocations(_req, ctx) {
            const queue: RevokedEntry[] = [];
            let wake: (() => void) | undefined;
            const watcher = (e: RevokedEntry) => {
              queue.push(e);
              wake?.();
            };
            watchers.add(watcher);
            try {
              yield create(WatchRevocationsResponseSchema, {
                event: {
                  case: "list",
                  value: { version: BigInt(entries.length), reset: true, entries: [...entries] },
                },
              });
              yield create(WatchRevocationsResponseSchema, {
                event: { case: "synced", value: { version: BigInt(entries.length) } },
              });
              while (!ctx.signal.aborted) {
                const next = queue.shift();
                if (next)
                  yield create(WatchRevocationsResponseSchema, { event: { case: "revoked", value: next } });
                else {
                  await new Promise<void>((resolve) => {
                    wake = resolve;
                    ctx.signal.addEventListener("abort", () => resolve(), { once: true });
                  });
                }
              }
            } finally {
              watchers.delete(watcher);
            }
          },
        },
        {
          sign: {},
          revoke: { services: ["registry"] },
          getTrustBundle: {},
          listCertificates: { services: ["registry"] },
          watchRevocations: { services: ["registry"] },
          listAudit: {},
          verifyAudit: {},
        },
      ),
    ],
  });
  server.setReady(true);
  return Object.assign(state, { url: server.grpcUrl, close: () => server.close() });
}
