import type { Http2ServerRequest } from "node:http2";
import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import { createContextKey, type ContextValues } from "@connectrpc/connect";

/**
 * The network address (`ip:port`) an RPC arrived from. Anonymous RPCs (Join, BootstrapDeveloper) are
 * rate-limited and audited by it, since the caller has no identity yet. Empty when unknown.
 * The RPC server sets it per request next to the peer identity (rpc-server.ts contextValues).
 */
export const kRemoteAddress = createContextKey<string>("", { description: "fabric caller address" });

/** The caller's `ip:port` from the request's socket (the HTTP/2 session's, or the HTTP/1 one). */
export function remoteAddressOf(req: Http2ServerRequest | IncomingMessage): string {
  const session = (req as Http2ServerRequest).stream?.session;
  const socket = (session?.socket ?? req.socket) as Socket | undefined;
  if (!socket?.remoteAddress) return "";
  const host = socket.remoteAddress.includes(":") ? `[${socket.remoteAddress}]` : socket.remoteAddress;
  return `${host}:${socket.remotePort ?? 0}`;
}

/** Reads the caller's address inside a handler ("" when the server did not record it). */
export function remoteAddressFrom(values: ContextValues): string {
  return values.get(kRemoteAddress);
}

/** The host part of an `ip:port` address ("[::1]:443" → "::1"); "" stays "". */
export function hostOfAddress(address: string): string {
  const port = address.lastIndexOf(":");
  const host = port > 0 ? address.slice(0, port) : address;
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}
