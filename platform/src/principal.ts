import type { Http2ServerRequest } from "node:http2";
import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import { createContextKey, type ContextValues } from "@connectrpc/connect";
import { inspectCertificate } from "./pki/certificates.js";
import { isAdminRole, type AdminRole, type PrincipalKind } from "./pki/principal-kinds.js";

/** Who is calling, read from the verified client certificate. */
export interface Principal {
  kind: PrincipalKind;
  id: string;
  spiffeId: string;
  trustDomain: string;
  cluster?: string;
  organization?: string;
  /** Raw grant: the admin role for admins, granted roles for nodes. */
  grant?: string;
  /** For admins: the role from the grant. */
  adminRole?: AdminRole;
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  fingerprintSha256: string;
}

/** What the connection presented, before authorization. */
export type PeerIdentity =
  { state: "verified"; principal: Principal } | { state: "none" } | { state: "rejected"; reason: string };

export const kPeer = createContextKey<PeerIdentity>(
  { state: "none" },
  { description: "fabric peer identity" },
);

export class PrincipalError extends Error {}

/**
 * Reads a Fabric principal from a certificate the TLS layer already verified against the CA bundle.
 * Refuses certificates whose SPIFFE ID, extensions and subject disagree, or that belong to another
 * trust domain.
 */
export function principalFromCertificate(der: Uint8Array, trustDomain: string): Principal {
  const facts = inspectCertificate(der);
  const identity = facts.identity;
  if (!identity) throw new PrincipalError("the certificate carries no Fabric SPIFFE ID");
  if (identity.trustDomain !== trustDomain) {
    throw new PrincipalError(
      `the certificate belongs to trust domain "${identity.trustDomain}", not "${trustDomain}"`,
    );
  }
  if (facts.kindExtension !== identity.kind) {
    throw new PrincipalError("the certificate's principal-kind extension does not match its SPIFFE ID");
  }
  if (facts.subjectCommonName !== identity.id) {
    throw new PrincipalError("the certificate's subject CN does not match its SPIFFE ID");
  }
  if (identity.kind === "node" && facts.clusterExtension !== identity.cluster) {
    throw new PrincipalError("the certificate's cluster extension does not match its SPIFFE ID");
  }
  const principal: Principal = {
    kind: identity.kind,
    id: identity.id,
    spiffeId: facts.spiffeId!,
    trustDomain,
    serialHex: facts.serialHex,
    notBefore: facts.notBefore,
    notAfter: facts.notAfter,
    fingerprintSha256: facts.fingerprintSha256,
  };
  const cluster = facts.clusterExtension ?? identity.cluster;
  if (cluster) principal.cluster = cluster;
  if (facts.organization) principal.organization = facts.organization;
  if (facts.grant) principal.grant = facts.grant;
  if (identity.kind === "admin") {
    if (!facts.grant || !isAdminRole(facts.grant))
      throw new PrincipalError("an admin certificate must grant an admin role");
    principal.adminRole = facts.grant;
  }
  return principal;
}

// Parsed once per connection: keyed by the HTTP/2 session (or the HTTP/1 socket).
const cache = new WeakMap<object, PeerIdentity>();

export function peerIdentityOf(req: Http2ServerRequest | IncomingMessage, trustDomain: string): PeerIdentity {
  const session = (req as Http2ServerRequest).stream?.session;
  const socket = (session?.socket ?? req.socket) as TLSSocket;
  const key: object = session ?? socket;
  const cached = cache.get(key);
  if (cached) return cached;
  const identity = readPeer(socket, trustDomain);
  cache.set(key, identity);
  return identity;
}

function readPeer(socket: TLSSocket, trustDomain: string): PeerIdentity {
  if (typeof socket.getPeerCertificate !== "function") return { state: "none" };
  const cert = socket.getPeerCertificate();
  if (!cert || !cert.raw) return { state: "none" };
  if (!socket.authorized) {
    return {
      state: "rejected",
      reason: `the client certificate was not accepted: ${String(socket.authorizationError)}`,
    };
  }
  try {
    return { state: "verified", principal: principalFromCertificate(cert.raw, trustDomain) };
  } catch (err) {
    return { state: "rejected", reason: (err as Error).message };
  }
}

/** Reads the caller inside a handler; only undefined for anonymous RPCs. */
export function principalOf(values: ContextValues): Principal | undefined {
  const peer = values.get(kPeer);
  return peer.state === "verified" ? peer.principal : undefined;
}
