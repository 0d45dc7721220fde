// A bare gRPC client over HTTP/2 with mTLS: sends whatever bytes it is given as the request message, so a
// service's own request decoding is what gets exercised.
import http2 from "node:http2";
import { normalizePem, type TlsCredentials } from "@fabric/platform";

export interface RawAnswer {
  /** grpc-status, or undefined when the call ended without one (connection reset, no trailers). */
  status: number | undefined;
  message: string;
}

export class RawGrpcClient {
  private session: http2.ClientHttp2Session | undefined;

  constructor(
    private readonly url: string,
    private readonly credentials: TlsCredentials | Pick<TlsCredentials, "caBundlePem">,
  ) {}

  private connect(): http2.ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const creds = this.credentials as Partial<TlsCredentials> & Pick<TlsCredentials, "caBundlePem">;
    const session = http2.connect(this.url, {
      ca: creds.caBundlePem,
      ...(creds.privateKeyPem && creds.certificatePem
        ? {
            key: creds.privateKeyPem,
            cert: [creds.certificatePem, ...(creds.chainPem ?? [])].map(normalizePem).join(""),
          }
        : {}),
      minVersion: "TLSv1.3",
      // The server is checked by its certificate chain; the address is 127.0.0.1.
      checkServerIdentity: () => undefined,
    });
    session.on("error", () => {}); // surfaces per call as a missing status
    this.session = session;
    return session;
  }

  /** POSTs one length-prefixed message to `/<service>/<method>` and reads the status. */
  call(path: string, payload: Uint8Array, timeoutMs: number): Promise<RawAnswer> {
    return new Promise((resolve) => {
      let status: number | undefined;
      let message = "";
      const read = (headers: http2.IncomingHttpHeaders) => {
        if (headers["grpc-status"] !== undefined) status = Number(headers["grpc-status"]);
        if (headers["grpc-message"] !== undefined)
          message = decodeURIComponent(String(headers["grpc-message"]));
      };
      let stream: http2.ClientHttp2Stream;
      try {
        stream = this.connect().request({
          ":method": "POST",
          ":path": path,
          "content-type": "application/grpc+proto",
          te: "trailers",
          "grpc-timeout": `${timeoutMs}m`,
        });
      } catch (err) {
        resolve({ status: undefined, message: (err as Error).message });
        return;
      }
      const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), timeoutMs + 1_000);
      stream.on("response", read);
      stream.on("trailers", read);
      stream.on("data", () => {});
      stream.on("error", (err) => (message ||= err.message));
      stream.on("close", () => {
        clearTimeout(timer);
        resolve({ status, message });
      });
      const frame = Buffer.alloc(5 + payload.length);
      frame.writeUInt32BE(payload.length, 1);
      frame.set(payload, 5);
      stream.end(frame);
    });
  }

  close(): void {
    this.session?.close();
  }
}
