// The TLS layer on its own, to show a refusal happened in the handshake rather than in an RPC.
import { connect } from "node:tls";
import { normalizePem, type TlsCredentials } from "@fabric/platform";

/**
 * Connects to `url` with `creds`, sends the HTTP/2 preface, and reports how the server ended the
 * connection: the TLS alert the client saw (e.g. "... alert unknown ca"), "closed" if the server hung
 * up without one reaching us, or "accepted" if it kept the session open for `waitMs`. In TLS 1.3 the
 * client finishes its side of the handshake first, so the server's verdict on the client certificate
 * arrives after "secureConnect".
 */
export function handshakeRefusal(url: string, creds: TlsCredentials, waitMs = 3_000): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({
      host: hostname,
      port: Number(port),
      key: creds.privateKeyPem,
      cert: [creds.certificatePem, ...creds.chainPem].map(normalizePem).join(""),
      ca: creds.caBundlePem,
      minVersion: "TLSv1.3",
      ALPNProtocols: ["h2"],
      checkServerIdentity: () => undefined,
    });
    socket.once("secureConnect", () => socket.write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    socket.resume();
    const timer = setTimeout(() => {
      socket.destroy();
      resolve("accepted");
    }, waitMs);
    socket.once("error", (err) => {
      clearTimeout(timer);
      resolve(err.message);
    });
    socket.once("close", () => {
      clearTimeout(timer);
      resolve("closed");
    });
  });
}
