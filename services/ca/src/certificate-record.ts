import type { IdentityClaims, PrincipalKind } from "@fabric/platform";
import type { LeafSummary } from "./leaf-issuer.js";

/** What the CA records about each certificate it issues (public facts only). */
export interface CertificateRecord {
  serial: string;
  principalKind: PrincipalKind;
  principalId: string;
  clusterId: string;
  organizationId: string;
  grants: string[];
  spiffeId: string;
  notBefore: Date;
  notAfter: Date;
  fingerprintSha256: string;
  /** SHA-256 of the key's SPKI; absent in offline journal lines written before it was recorded. */
  publicKeySha256?: string;
  authorizationRef: string;
  /** When the CA signed it (ListCertificates sorts by this, newest first). */
  issuedAt: Date;
}

/** Grants travel as a list in the API and as one comma-separated UTF8String in the certificate. */
export const GRANT_SEPARATOR = ",";

export function recordOf(
  leaf: LeafSummary,
  claims: IdentityClaims,
  grants: string[],
  authorizationRef: string,
): CertificateRecord {
  return {
    serial: leaf.serialHex,
    principalKind: claims.kind,
    principalId: claims.id,
    clusterId: claims.cluster ?? "",
    organizationId: claims.organization ?? "",
    grants,
    spiffeId: leaf.spiffeId,
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    fingerprintSha256: leaf.fingerprintSha256,
    publicKeySha256: leaf.publicKeySha256,
    authorizationRef,
    issuedAt: new Date(),
  };
}
