/**
 * Fabric's private OID arc. Every custom certificate extension lives under it, defined here once.
 * 1.3.6.1.4.1.99999 is a placeholder enterprise number until Fabric registers its own with IANA.
 *
 *   <arc>.1.1  principal kind      UTF8String: node | service | user | admin
 *   <arc>.1.2  cluster id          UTF8String
 *   <arc>.1.3  organization id     UTF8String
 *   <arc>.1.4  grant               UTF8String (admin role for admins, granted roles for nodes, comma separated)
 *
 * All four are non-critical: a verifier that does not know them still validates the chain, while Fabric's
 * own services read them to authorize.
 */
export const FABRIC_ARC = "1.3.6.1.4.1.99999";
export const OID_PRINCIPAL_KIND = `${FABRIC_ARC}.1.1`;
export const OID_CLUSTER = `${FABRIC_ARC}.1.2`;
export const OID_ORGANIZATION = `${FABRIC_ARC}.1.3`;
export const OID_GRANT = `${FABRIC_ARC}.1.4`;

export const OID_EKU_SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
export const OID_EKU_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
