import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  CertificateInfoSchema,
  CertificateStatus,
  RevokedEntrySchema,
  WatchRevocationsResponseSchema,
  type WatchRevocationsResponse,
} from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import type { StoredCertificate } from "./inventory.js";
import type { RevocationEvent } from "./revocation-log.js";
import { KIND_TO_PROTO } from "./sign-request.js";

// Domain records → ca.proto messages.

export function toCertificateInfo(c: StoredCertificate, now = new Date()) {
  const status = c.revokedAt
    ? CertificateStatus.REVOKED
    : c.notAfter <= now
      ? CertificateStatus.EXPIRED
      : CertificateStatus.ACTIVE;
  return create(CertificateInfoSchema, {
    serial: c.serial,
    principalKind: KIND_TO_PROTO[c.principalKind],
    principalId: c.principalId,
    clusterId: c.clusterId,
    organizationId: c.organizationId,
    grants: c.grants,
    spiffeId: c.spiffeId,
    notBefore: timestampFromDate(c.notBefore),
    notAfter: timestampFromDate(c.notAfter),
    fingerprintSha256: c.fingerprintSha256,
    status,
    ...(c.revokedAt
      ? { revokedAt: timestampFromDate(c.revokedAt), revocationReason: c.revocationReason ?? 0 }
      : {}),
    authorizationRef: c.authorizationRef,
  });
}

export function revokedMessage(e: RevocationEvent): WatchRevocationsResponse {
  return create(WatchRevocationsResponseSchema, {
    event: { case: "revoked", value: revokedEntry(e) },
  });
}

export function revokedEntry(e: RevocationEvent) {
  return create(RevokedEntrySchema, {
    version: e.version,
    serial: e.serial,
    principalKind: KIND_TO_PROTO[e.principalKind],
    principalId: e.principalId,
    clusterId: e.clusterId,
    reason: e.reason,
    revokedAt: timestampFromDate(e.revokedAt),
    notAfter: timestampFromDate(e.notAfter),
  });
}
