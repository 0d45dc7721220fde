import { isIP } from "node:net";
import tls, { type DetailedPeerCertificate, type TLSSocket } from "node:tls";
import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { toPem } from "./pki/pem.js";
import { tracingInterceptor } from "./tracing.js";

export interface BootstrapClient<S extends DescService> {
  client: Client<S>;
  /**
   * The certificate chain (leaf first, PEM) each connection of this client was presented, in connection
   * order. Empty until a connection is established.
   */
  presentedChains(): string[][];
}

/**
 * First contact with a Fabric service whose CA this process does not know yet — only the developer
 * bootstrap (`fabric dev init`) needs it. TLS 1.3 with no client certificate and WITHOUT verifying the
 * server's certificate; instead every chain the server presents is recorded, so that once the caller
 * has authenticated a CA bundle by other means (for the developer bootstrap: the PIN-keyed MAC) it can
 * check that the server it actually talked to chains to that bundle, and refuse everything it received
 * otherwise. Anything else must use createRpcClient, which verifies the server before sending a byte.
 */
export function createBootstrapClient<S extends DescService>(
  service: S,
  options: { url: string; timeoutMs?: number },
): BootstrapClient<S> {
  const chains: string[][] = [];
  const transport = createGrpcTransport({
    baseUrl: options.url,
    defaultTimeoutMs: options.timeoutMs ?? 15_000,
    interceptors: [tracingInterceptor("client")],
    nodeOptions: {
      createConnection(authority: URL): TLSSocket {
        const host = authority.hostname.replace(/^\[|\]$/g, "");
        const socket = tls.connect({
          host,
          port: Number(authority.port) || 443,
          ...(isIP(host) ? {} : { servername: host }),
          ALPNProtocols: ["h2"],
          minVersion: "TLSv1.3",
          rejectUnauthorized: false,
        });
        // Recorded before any request is written on this connection.
        socket.once("secureConnect", () => chains.push(presentedChain(socket)));
        return socket;
      },
    },
  });
  return { client: createClient(service, transport), presentedChains: () => chains.map((c) => [...c]) };
}

/** The certificates the peer sent, leaf first, as PEM. */
function presentedChain(socket: TLSSocket): string[] {
  const pems: string[] = [];
  const seen = new Set<string>();
  let cert: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (cert?.raw && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256);
    pems.push(toPem(cert.raw, "CERTIFICATE"));
    cert = cert.issuerCertificate;
  }
  return pems;
}
