import { isPrincipalKind, type PrincipalKind } from "./principal-kinds.js";

/** What a SPIFFE ID says about a Fabric principal. */
export interface SpiffeIdentity {
  trustDomain: string;
  kind: PrincipalKind;
  id: string;
  /** Set for nodes only: `spiffe://<td>/cluster/<cluster>/node/<id>`. */
  cluster?: string;
}

// Trust domains are lowercase DNS-like names; ids are the characters Fabric allows in principal ids.
const TRUST_DOMAIN = /^[a-z0-9]([a-z0-9.-]{0,253}[a-z0-9])?$/;
export const PRINCIPAL_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export class SpiffeIdError extends Error {}

export function isValidTrustDomain(td: string): boolean {
  return TRUST_DOMAIN.test(td);
}

export function isValidPrincipalId(id: string): boolean {
  return PRINCIPAL_ID.test(id);
}

export function buildSpiffeId(identity: SpiffeIdentity): string {
  const { trustDomain, kind, id, cluster } = identity;
  if (!isValidTrustDomain(trustDomain)) throw new SpiffeIdError(`invalid trust domain "${trustDomain}"`);
  if (!isValidPrincipalId(id)) throw new SpiffeIdError(`invalid principal id "${id}"`);
  if (kind === "node") {
    if (!cluster || !isValidPrincipalId(cluster))
      throw new SpiffeIdError("a node SPIFFE ID needs a valid cluster id");
    return `spiffe://${trustDomain}/cluster/${cluster}/node/${id}`;
  }
  return `spiffe://${trustDomain}/${kind}/${id}`;
}

export function parseSpiffeId(uri: string): SpiffeIdentity {
  const match = /^spiffe:\/\/([^/]+)\/(.+)$/.exec(uri);
  if (!match) throw new SpiffeIdError(`not a SPIFFE ID: "${uri}"`);
  const trustDomain = match[1]!;
  const segments = match[2]!.split("/");
  if (!isValidTrustDomain(trustDomain)) throw new SpiffeIdError(`invalid trust domain in "${uri}"`);
  if (segments.length === 4 && segments[0] === "cluster" && segments[2] === "node") {
    const [, cluster, , id] = segments as [string, string, string, string];
    if (!isValidPrincipalId(cluster) || !isValidPrincipalId(id))
      throw new SpiffeIdError(`invalid ids in "${uri}"`);
    return { trustDomain, kind: "node", id, cluster };
  }
  if (segments.length === 2) {
    const [kind, id] = segments as [string, string];
    if (kind !== "node" && isPrincipalKind(kind) && isValidPrincipalId(id)) return { trustDomain, kind, id };
  }
  throw new SpiffeIdError(`"${uri}" is not a Fabric principal SPIFFE ID`);
}
