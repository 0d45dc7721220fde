import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import {
  actorOf,
  failedPrecondition,
  inspectCertificate,
  splitCertificates,
  transaction,
  type Principal,
} from "@fabric/platform";
import { SignRequestSchema } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import type { RenewRequest } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { principalKindOf, type Enrollment } from "./context.js";
import { MAX_CERTIFICATE_LIFETIME_MS } from "./approvals.js";
import { enrollmentOf, recordRenewal } from "./principal-enrollments.js";
import { checkCsr, durationField } from "./validation.js";

export interface Renewed {
  certificatePem: string;
  chainPem: string[];
  caBundlePem: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

/**
 * Renewal over mTLS: the platform has already refused expired (TLS) and revoked (interceptor)
 * certificates, and services (the authorization table: they renew through the CA's Sign, which carries
 * their server names over), so the caller is a valid node, developer or admin. The new certificate names exactly what the presented
 * one names — kind, id, cluster, organization, grants — never anything from the CSR, whose key alone is
 * taken (a fresh key is a rekey). It never outlives the maximum enrollment age, and never lives longer
 * than the identity was given: the lifetime recorded when it enrolled (an approval of one minute renews
 * for one minute), or for identities enrolled elsewhere the presented certificate's own lifetime.
 */
export async function renew(deps: Enrollment, principal: Principal, req: RenewRequest): Promise<Renewed> {
  await checkCsr(req.csrPem);
  const requested = durationField(req.requestedLifetime, "requested_lifetime");
  const byKind =
    principal.kind === "node" ? deps.config.nodeCertificateLifetimeMs : deps.config.userCertificateLifetimeMs;
  const now = Date.now();
  const enrollment = await enrollmentOf(deps.pool, principal.spiffeId, principal.notBefore);
  const enrolledAt = enrollment.firstEnrolledAt;
  const ageLimit = enrolledAt.getTime() + deps.config.maxEnrollmentAgeMs;
  if (ageLimit <= now) {
    throw failedPrecondition(
      `${principal.kind} "${principal.id}" was enrolled at ${enrolledAt.toISOString()}, longer ago than the maximum enrollment age; enroll again (join with a token, or bootstrap with a PIN)`,
    );
  }
  const grantedMs = enrollment.lifetimeMs ?? principal.notAfter.getTime() - principal.notBefore.getTime();
  const lifetimeMs = Math.min(requested || byKind, MAX_CERTIFICATE_LIFETIME_MS, ageLimit - now, grantedMs);

  let signed;
  try {
    signed = await deps.ca.sign(
      create(SignRequestSchema, {
        csrPem: req.csrPem,
        principalKind: principalKindOf(principal.kind),
        principalId: principal.id,
        clusterId: principal.cluster ?? "",
        organizationId: principal.organization ?? "",
        grants: principal.grant ? principal.grant.split(",") : [],
        requestedLifetime: durationFromMs(Math.max(1_000, Math.floor(lifetimeMs))),
        authorizationRef: `renewal/${principal.serialHex}`,
      }),
    );
  } catch (err) {
    const error = ConnectError.from(err);
    throw new ConnectError(`the CA did not renew the certificate: ${error.rawMessage}`, error.code);
  }
  const actor = actorOf(principal);
  await transaction(deps.pool, async (tx) => {
    await recordRenewal(tx, {
      spiffeId: principal.spiffeId,
      kind: principal.kind,
      principalId: principal.id,
      firstEnrolledAt: enrolledAt,
      lifetimeMs: grantedMs,
    });
    tx.audit({
      actorId: actor.id,
      actorKind: actor.kind,
      action: "identity.renew",
      targetType: principal.kind,
      targetId: principal.id,
      clusterId: principal.cluster ?? "",
      orgId: principal.organization ?? "",
      outcome: "success",
      details: { previousSerial: principal.serialHex, serial: signed.serial },
    });
  });
  const facts = inspectCertificate(signed.certificatePem);
  return {
    certificatePem: signed.certificatePem,
    chainPem: signed.chainPem.flatMap(splitCertificates),
    caBundlePem: signed.caBundlePem,
    serial: signed.serial,
    notBefore: signed.notBefore ? timestampDate(signed.notBefore) : facts.notBefore,
    notAfter: signed.notAfter ? timestampDate(signed.notAfter) : facts.notAfter,
  };
}
