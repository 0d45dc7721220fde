import { isIP } from "node:net";
import type { Duration } from "@bufbuild/protobuf/wkt";
import type { SignRequest } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind as ProtoKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import {
  ADMIN_ROLES,
  invalidArgument,
  isAdminRole,
  isValidPrincipalId,
  type IdentityClaims,
  type PrincipalKind,
} from "@fabric/platform";
import { GRANT_SEPARATOR } from "./certificate-record.js";

export const KIND_FROM_PROTO: Partial<Record<ProtoKind, PrincipalKind>> = {
  [ProtoKind.NODE]: "node",
  [ProtoKind.SERVICE]: "service",
  [ProtoKind.USER]: "user",
  [ProtoKind.ADMIN]: "admin",
};

export const KIND_TO_PROTO: Record<PrincipalKind, ProtoKind> = {
  node: ProtoKind.NODE,
  service: ProtoKind.SERVICE,
  user: ProtoKind.USER,
  admin: ProtoKind.ADMIN,
};

/** A proto PrincipalKind, or InvalidArgument naming the field. */
export function kindFromProto(kind: ProtoKind, field: string): PrincipalKind {
  const k = KIND_FROM_PROTO[kind];
  if (!k) throw invalidArgument(`${field} is required: one of node, service, user, admin`);
  return k;
}

const MAX_GRANTS = 32;
const MAX_GRANT_LENGTH = 64;
const MAX_AUTHORIZATION_REF = 256;
const MAX_SERVER_NAMES = 16;
const GRANT = /^[A-Za-z0-9._:/-]+$/;
const DNS_NAME =
  /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** A Sign request checked against ca.proto, as the issuer's inputs. */
export interface ValidatedSignRequest {
  claims: IdentityClaims;
  grants: string[];
  requestedLifetimeMs: number;
  dnsNames: string[];
  ipAddresses: string[];
  authorizationRef: string;
}

/**
 * Checks every field of a SignRequest except the CSR (verified separately) and builds the claims the
 * certificate will carry. Nothing here comes from the CSR. Throws InvalidArgument naming the field.
 */
export function validateSignRequest(req: SignRequest, trustDomain: string): ValidatedSignRequest {
  const kind = kindFromProto(req.principalKind, "principal_kind");
  if (!isValidPrincipalId(req.principalId)) {
    throw invalidArgument(
      "principal_id must be 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit",
    );
  }
  for (const [field, value] of [
    ["cluster_id", req.clusterId],
    ["organization_id", req.organizationId],
  ] as const) {
    if (value && !isValidPrincipalId(value)) {
      throw invalidArgument(`${field} must be 1-64 characters of [A-Za-z0-9._-] (or empty)`);
    }
  }
  if (req.grants.length > MAX_GRANTS) throw invalidArgument(`grants holds at most ${MAX_GRANTS} entries`);
  for (const grant of req.grants) {
    if (grant.length === 0 || grant.length > MAX_GRANT_LENGTH || !GRANT.test(grant)) {
      throw invalidArgument(
        `each grant must be 1-${MAX_GRANT_LENGTH} characters of [A-Za-z0-9._:/-] (grants are joined with "${GRANT_SEPARATOR}" in the certificate)`,
      );
    }
  }
  if (!req.authorizationRef) {
    throw invalidArgument(
      "authorization_ref is required: say what authorized this issuance (e.g. join-request/<id>)",
    );
  }
  if (req.authorizationRef.length > MAX_AUTHORIZATION_REF) {
    throw invalidArgument(`authorization_ref is at most ${MAX_AUTHORIZATION_REF} characters`);
  }
  if (kind !== "service" && (req.dnsNames.length > 0 || req.ipAddresses.length > 0)) {
    throw invalidArgument("dns_names and ip_addresses are only for PRINCIPAL_KIND_SERVICE identities");
  }
  if (req.dnsNames.length + req.ipAddresses.length > MAX_SERVER_NAMES) {
    throw invalidArgument(`at most ${MAX_SERVER_NAMES} dns_names and ip_addresses together`);
  }
  for (const dns of req.dnsNames) {
    if (!DNS_NAME.test(dns)) throw invalidArgument(`dns_names: "${dns}" is not a DNS name`);
  }
  for (const ip of req.ipAddresses) {
    if (!isIP(ip)) throw invalidArgument(`ip_addresses: "${ip}" is not an IPv4 or IPv6 address`);
  }
  checkKindRules(kind, req);
  const claims: IdentityClaims = { trustDomain, kind, id: req.principalId };
  if (req.clusterId) claims.cluster = req.clusterId;
  if (req.organizationId) claims.organization = req.organizationId;
  if (req.grants.length > 0) claims.grant = req.grants.join(GRANT_SEPARATOR);
  return {
    claims,
    grants: [...req.grants],
    requestedLifetimeMs: durationMs(req.requestedLifetime),
    dnsNames: [...req.dnsNames],
    ipAddresses: [...req.ipAddresses],
    authorizationRef: req.authorizationRef,
  };
}

/** What each kind must and must not carry (ca.proto SignRequest field comments). */
function checkKindRules(kind: PrincipalKind, req: SignRequest): void {
  switch (kind) {
    case "node":
      if (!req.clusterId) throw invalidArgument("cluster_id is required for a node identity");
      return;
    case "service":
      if (req.clusterId || req.organizationId) {
        throw invalidArgument("a service identity has no cluster_id or organization_id");
      }
      if (req.grants.length !== 1 || req.grants[0] !== req.principalId) {
        throw invalidArgument(
          `a service identity's grants must be exactly its own name ["${req.principalId}"]`,
        );
      }
      return;
    case "admin": {
      const role = req.grants[0];
      if (req.grants.length !== 1 || !role || !isAdminRole(role)) {
        throw invalidArgument(
          `an admin identity's grants must be exactly one admin role: ${ADMIN_ROLES.join(", ")}`,
        );
      }
      if (role === "cluster-admin" && !req.clusterId) {
        throw invalidArgument("a cluster-admin identity needs cluster_id: the cluster it administers");
      }
      if (role === "org-admin" && !req.organizationId) {
        throw invalidArgument("an org-admin identity needs organization_id: the organization it administers");
      }
      if (role !== "cluster-admin" && req.clusterId) {
        throw invalidArgument(`a ${role} identity has no cluster_id`);
      }
      return;
    }
    case "user":
      return;
  }
}

function durationMs(d: Duration | undefined): number {
  if (!d) return 0;
  const ms = Number(d.seconds) * 1000 + Math.floor(d.nanos / 1e6);
  if (ms < 0) throw invalidArgument("requested_lifetime must not be negative (0 = the default for the kind)");
  return ms;
}
