import { decodeUtf8String, encodeUtf8String } from "./der.js";
import { OID_CLUSTER, OID_GRANT, OID_ORGANIZATION, OID_PRINCIPAL_KIND } from "./oids.js";
import { isPrincipalKind, type PrincipalKind } from "./principal-kinds.js";

/**
 * What enrollment authorized for an identity. The CA builds subject, SPIFFE URI SAN and the custom
 * extensions from this and nothing else.
 */
export interface IdentityClaims {
  trustDomain: string;
  kind: PrincipalKind;
  id: string;
  cluster?: string;
  organization?: string;
  grant?: string;
}

export interface RawExtension {
  oid: string;
  critical: boolean;
  /** DER of the extension value (the content of the OCTET STRING). */
  value: Buffer;
}

/** The custom extensions of an identity, in a fixed order, omitting empty optional ones. */
export function claimExtensions(claims: IdentityClaims): RawExtension[] {
  const entries: [string, string | undefined][] = [
    [OID_PRINCIPAL_KIND, claims.kind],
    [OID_CLUSTER, claims.cluster],
    [OID_ORGANIZATION, claims.organization],
    [OID_GRANT, claims.grant],
  ];
  return entries
    .filter((e): e is [string, string] => typeof e[1] === "string" && e[1].length > 0)
    .map(([oid, value]) => ({ oid, critical: false, value: encodeUtf8String(value) }));
}

/** Reads the custom extensions back; unknown or malformed ones are ignored by the caller's choice. */
export function readClaimExtensions(extensions: Iterable<{ oid: string; value: Uint8Array }>): {
  kind?: PrincipalKind;
  cluster?: string;
  organization?: string;
  grant?: string;
} {
  const out: { kind?: PrincipalKind; cluster?: string; organization?: string; grant?: string } = {};
  for (const ext of extensions) {
    switch (ext.oid) {
      case OID_PRINCIPAL_KIND: {
        const kind = decodeUtf8String(ext.value);
        if (!isPrincipalKind(kind)) throw new Error(`unknown principal kind "${kind}" in certificate`);
        out.kind = kind;
        break;
      }
      case OID_CLUSTER:
        out.cluster = decodeUtf8String(ext.value);
        break;
      case OID_ORGANIZATION:
        out.organization = decodeUtf8String(ext.value);
        break;
      case OID_GRANT:
        out.grant = decodeUtf8String(ext.value);
        break;
    }
  }
  return out;
}
