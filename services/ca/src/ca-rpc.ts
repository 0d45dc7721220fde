import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  CaService,
  CertificateStatus,
  GetTrustBundleResponseSchema,
  ListCertificatesResponseSchema,
  RevocationReason,
  RevokeResponseSchema,
  SignResponseSchema,
  WatchRevocationsResponseSchema,
} from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import {
  actorOf,
  callerOf,
  invalidArgument,
  isValidPrincipalId,
  notFound,
  permissionDenied,
  refusalAuditorFor,
  type Logger,
  serve,
  type AuditHandlers,
  type FabricError,
  type Pool,
  type Principal,
  type PrincipalKind,
  type ServiceRegistration,
} from "@fabric/platform";
import { listingCluster, revocationScope, signRefusal } from "./caller-scope.js";
import { CompromisedKeyError } from "./compromised-keys.js";
import { findCertificate, listCertificates, type CertificateStatusFilter } from "./inventory.js";
import { issuanceAudit } from "./issuance-log.js";
import { recordOf } from "./certificate-record.js";
import { validityFor } from "./lifetimes.js";
import { revokedEntry, revokedMessage, toCertificateInfo } from "./messages.js";
import { CA_POLICY } from "./policy.js";
import { readRevocations } from "./revocation-log.js";
import type { CaRuntime } from "./runtime.js";
import { kindFromProto, validateSignRequest } from "./sign-request.js";

const LIST_CHUNK = 1_000;
const MAX_COMMENT = 512;
// RFC 5280 reasons Revoke accepts: revocation is final, so certificateHold and removeFromCRL are not.
const FINAL_REASONS = new Set<number>([
  RevocationReason.UNSPECIFIED,
  RevocationReason.KEY_COMPROMISE,
  RevocationReason.CA_COMPROMISE,
  RevocationReason.AFFILIATION_CHANGED,
  RevocationReason.SUPERSEDED,
  RevocationReason.CESSATION_OF_OPERATION,
  RevocationReason.PRIVILEGE_WITHDRAWN,
  RevocationReason.AA_COMPROMISE,
]);

const STATUS_FILTERS: Record<CertificateStatus, CertificateStatusFilter> = {
  [CertificateStatus.UNSPECIFIED]: "any",
  [CertificateStatus.ACTIVE]: "active",
  [CertificateStatus.REVOKED]: "revoked",
  [CertificateStatus.EXPIRED]: "expired",
};

/** Records a refused attempt in the audit log and returns the refusal (PermissionDenied unless given). */
async function refuse(
  ctx: { pool: Pool; logger: Logger },
  who: Principal,
  action: string,
  target: { type: string; id: string; clusterId?: string },
  refusal: string | FabricError,
): Promise<FabricError> {
  const error = typeof refusal === "string" ? permissionDenied(refusal) : refusal;
  // Through the service's one refusal auditor (its own connection, batched, folded when flooded): a
  // caller repeating refused calls cannot drain the pool that issuance needs.
  await refusalAuditorFor(ctx.pool, ctx.logger).recordAndWait({
    actorId: who.id,
    actorKind: who.kind,
    action,
    targetType: target.type,
    targetId: target.id,
    clusterId: target.clusterId ?? "",
    details: { reason: error.message },
  });
  return error;
}

/** Hex serial as the inventory keys it: lowercase, without separators or leading zeros. */
export function normalizeSerial(serial: string): string {
  const hex = serial.replace(/:/g, "").toLowerCase().replace(/^0+/, "");
  if (!/^[0-9a-f]{1,40}$/.test(hex)) {
    throw invalidArgument(
      "serial must be the certificate's serial number in hex (as Sign or ListCertificates return it)",
    );
  }
  return hex;
}

/** Whether the CA ever issued this principal a certificate scoped to `clusterId`. */
async function hasCertificates(pool: Pool, kind: PrincipalKind, id: string, clusterId: string) {
  const page = await listCertificates(
    pool,
    { principalKind: kind, principalId: id, clusterId, status: "any" },
    { pageSize: 1, pageToken: "" },
  );
  return page.certificates.length > 0;
}

/** The CaService implementation over the runtime's parts. */
export function caService(
  rt: CaRuntime,
  ctx: { pool: Pool; logger: Logger; trustDomain: string; audit: AuditHandlers },
): ServiceRegistration {
  const { pool, trustDomain } = ctx;

  return serve(
    CaService,
    {
      async sign(req, hctx) {
        const who = callerOf(hctx);
        const target = { type: "principal", id: req.principalId, clusterId: req.clusterId };
        const refused = signRefusal(who, req);
        if (refused) throw await refuse(ctx, who, "certificate.issue", target, refused);
        const valid = validateSignRequest(req, trustDomain);
        const validity = validityFor(valid.claims.kind, valid.requestedLifetimeMs, {
          policy: rt.lifetimes,
          issuerNotAfter: rt.leaves.issuerNotAfter,
          startAfter: rt.revoker.cutoffFor(valid.claims.kind, valid.claims.id),
        });
        // CSR verification (proof of possession) and signing, on a worker thread.
        const leaf = await rt.workers.issue({
          csrPem: req.csrPem,
          claims: valid.claims,
          notBefore: validity.notBefore.getTime(),
          notAfter: validity.notAfter.getTime(),
          dnsNames: valid.dnsNames,
          ipAddresses: valid.ipAddresses,
        });
        const record = recordOf(leaf, valid.claims, valid.grants, valid.authorizationRef);
        try {
          await rt.issuance.record(record, issuanceAudit(record, who));
        } catch (err) {
          // Someone holding (or replaying a CSR of) a key reported compromised: worth the audit trail.
          if (err instanceof CompromisedKeyError) {
            throw await refuse(ctx, who, "certificate.issue", target, err);
          }
          throw err;
        }
        return create(SignResponseSchema, {
          certificatePem: leaf.pem,
          chainPem: [rt.ca.intermediatePem],
          caBundlePem: rt.ca.rootPem,
          serial: leaf.serialHex,
          notBefore: timestampFromDate(leaf.notBefore),
          notAfter: timestampFromDate(leaf.notAfter),
          fingerprintSha256: leaf.fingerprintSha256,
          spiffeId: leaf.spiffeId,
        });
      },

      async revoke(req, hctx) {
        const who = callerOf(hctx);
        if (!FINAL_REASONS.has(req.reason)) {
          throw invalidArgument(
            "reason must be an RFC 5280 reason other than CERTIFICATE_HOLD or REMOVE_FROM_CRL: Fabric revocation is final",
          );
        }
        if (req.comment.length > MAX_COMMENT)
          throw invalidArgument(`comment is at most ${MAX_COMMENT} characters`);
        const actor = actorOf(who);
        let scope: string;
        try {
          scope = revocationScope(who);
        } catch (err) {
          throw await refuse(
            ctx,
            who,
            "certificate.revoke",
            { type: "certificate", id: "" },
            err as FabricError,
          );
        }
        // Every id a request names is checked against the caller's scope, even one the target ignores.
        if (scope && req.clusterId && req.clusterId !== scope) {
          throw await refuse(
            ctx,
            who,
            req.target.case === "serial" ? "certificate.revoke" : "principal.revoke",
            { type: "cluster", id: req.clusterId, clusterId: req.clusterId },
            `cluster-admin of "${scope}" may only revoke certificates of cluster "${scope}"`,
          );
        }
        let outcome;
        switch (req.target.case) {
          case "serial": {
            const serial = normalizeSerial(req.target.value);
            await rt.importOffline();
            const cert = await findCertificate(pool, serial);
            if (!cert) {
              throw notFound(
                `no certificate with serial ${serial} was issued by this CA; check ListCertificates`,
              );
            }
            if (scope && cert.clusterId !== scope) {
              throw await refuse(
                ctx,
                who,
                "certificate.revoke",
                { type: "certificate", id: serial, clusterId: cert.clusterId },
                `cluster-admin of "${scope}" may only revoke certificates of cluster "${scope}"`,
              );
            }
            outcome = await rt.revoker.revokeSerial(serial, req.reason, req.comment, actor, scope);
            break;
          }
          case "principal": {
            const kind = kindFromProto(req.target.value.kind, "principal.kind");
            const id = req.target.value.id;
            if (!isValidPrincipalId(id))
              throw invalidArgument("principal.id must be 1-64 characters of [A-Za-z0-9._-]");
            if (req.clusterId && !isValidPrincipalId(req.clusterId)) {
              throw invalidArgument("cluster_id must be 1-64 characters of [A-Za-z0-9._-] (or empty)");
            }
            await rt.importOffline();
            // A principal with no certificate in the cluster-admin's cluster is none of its business, and
            // whether it has any elsewhere is not said.
            if (scope && !(await hasCertificates(pool, kind, id, scope))) {
              throw await refuse(
                ctx,
                who,
                "principal.revoke",
                { type: "principal", id: `${kind}/${id}`, clusterId: scope },
                notFound(`${kind} "${id}" has no certificates in cluster "${scope}"`),
              );
            }
            outcome = await rt.revoker.revokePrincipal(
              kind,
              id,
              scope || req.clusterId,
              req.reason,
              req.comment,
              actor,
            );
            break;
          }
          default:
            throw invalidArgument("set exactly one target: serial or principal");
        }
        return create(RevokeResponseSchema, {
          revokedSerials: outcome.revokedSerials,
          revokedAt: timestampFromDate(outcome.revokedAt),
          version: outcome.version,
        });
      },

      getTrustBundle() {
        return create(GetTrustBundleResponseSchema, {
          caBundlePem: rt.ca.rootPem,
          intermediatesPem: [rt.ca.intermediatePem],
          rootFingerprintsSha256: [rt.ca.rootFingerprintSha256],
          trustDomain,
          crlUrls: [rt.crlUrl],
          ocspUrls: [rt.ocspUrl],
        });
      },

      async listCertificates(req, hctx) {
        const clusterId = listingCluster(callerOf(hctx), req.clusterId);
        const filter = {
          status: STATUS_FILTERS[req.status] ?? "any",
          ...(req.principalId ? { principalId: req.principalId } : {}),
          ...(req.principalKind ? { principalKind: kindFromProto(req.principalKind, "principal_kind") } : {}),
          ...(clusterId ? { clusterId } : {}),
          ...(req.organizationId ? { organizationId: req.organizationId } : {}),
        };
        await rt.importOffline();
        const page = await listCertificates(pool, filter, {
          pageSize: req.pageSize,
          pageToken: req.pageToken,
        });
        const now = new Date();
        return create(ListCertificatesResponseSchema, {
          certificates: page.certificates.map((c) => toCertificateInfo(c, now)),
          nextPageToken: page.nextPageToken,
        });
      },

      async *watchRevocations(req, hctx) {
        // Subscribe before reading the table: whatever commits in between arrives live and is de-duplicated
        // by version.
        const live = rt.broadcaster.subscribe(hctx.signal);
        const { head, events } = await readRevocations(pool);
        const from = req.resumeFromVersion;
        if (from > 0n && from <= head) {
          // Resume: replay what the client missed, then it is up to date.
          for (const e of events) if (e.version > from) yield revokedMessage(e);
        } else {
          for (let i = 0; i === 0 || i < events.length; i += LIST_CHUNK) {
            yield create(WatchRevocationsResponseSchema, {
              event: {
                case: "list",
                value: {
                  version: head,
                  reset: i === 0,
                  resumeExpired: i === 0 && from > 0n,
                  entries: events.slice(i, i + LIST_CHUNK).map(revokedEntry),
                },
              },
            });
          }
        }
        yield create(WatchRevocationsResponseSchema, { event: { case: "synced", value: { version: head } } });
        for await (const e of live) if (e.version > head) yield revokedMessage(e);
      },
      ...ctx.audit,
    },
    CA_POLICY,
  );
}
