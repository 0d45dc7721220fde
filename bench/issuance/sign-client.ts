// A minimal unary gRPC client over one mTLS HTTP/2 connection, for load generation only. The issuance
// benches run client, CA and Postgres on the same cores, and connect-node's client cost about 400 µs of CPU
// per call here, half as much as the CA's whole Sign: the clients took the CPU the CA was being measured
// on. This one costs about 80 µs: it sends pre-encoded request frames and checks each answer (HTTP status,
// grpc-status, one whole response message). Services keep using @fabric/platform's createRpcClient.
import http2 from "node:http2";
import type { PeerCertificate } from "node:tls";
import { fromBinary } from "@bufbuild/protobuf";
import { CaService, SignResponseSchema } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { inspectCertificate, secureContextOptions, type TlsCredentials } from "@fabric/platform";

export interface GrpcConnection {
  /** One unary call: `frame` is the gRPC-framed request message; resolves with the response message. */
  call(path: string, frame: Buffer): Promise<Buffer>;
  close(): void;
}

/** A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, the message. */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.length);
  frame[0] = 0;
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

const WINDOW = 16 * 1024 * 1024;

/** Connects as `credentials` to the server at `url`, which must present the SPIFFE ID `serverId`. */
export async function connectGrpc(
  url: string,
  credentials: TlsCredentials,
  serverId: string,
): Promise<GrpcConnection> {
  const session = http2.connect(url, {
    ...secureContextOptions(credentials),
    checkServerIdentity: (_host: string, cert: PeerCertificate) => {
      const actual = cert.raw ? inspectCertificate(cert.raw).spiffeId : undefined;
      return actual === serverId
        ? undefined
        : new Error(`server is ${actual ?? "unknown"}, expected ${serverId}`);
    },
    // Many responses in flight: a small window would make the server wait for WINDOW_UPDATEs.
    settings: { initialWindowSize: WINDOW },
  });
  await new Promise<void>((resolve, reject) => {
    session.once("connect", () => resolve());
    session.once("error", reject);
  });
  session.setLocalWindowSize(WINDOW);
  session.on("error", () => {}); // each call fails on its own stream

  return {
    call(path, frame) {
      return new Promise((resolve, reject) => {
        const stream = session.request({
          ":method": "POST",
          ":path": path,
          "content-type": "application/grpc+proto",
          te: "trailers",
        });
        const chunks: Buffer[] = [];
        let httpStatus = 0;
        let grpcStatus: string | undefined;
        let grpcMessage = "";
        const readStatus = (headers: http2.IncomingHttpHeaders) => {
          if (headers["grpc-status"] !== undefined) grpcStatus = String(headers["grpc-status"]);
          if (headers["grpc-message"] !== undefined)
            grpcMessage = decodeURIComponent(String(headers["grpc-message"]));
        };
        stream.on("response", (headers) => {
          httpStatus = Number(headers[":status"]);
          readStatus(headers); // a trailers-only answer carries its status here
        });
        stream.on("data", (chunk: Buffer) => chunks.push(chunk));
        stream.on("trailers", readStatus);
        stream.on("error", reject);
        stream.on("close", () => {
          if (httpStatus !== 200 || grpcStatus !== "0") {
            reject(new Error(`HTTP ${httpStatus}, grpc-status ${grpcStatus ?? "missing"}: ${grpcMessage}`));
            return;
          }
          const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
          if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) {
            reject(new Error(`the response is not one uncompressed gRPC message (${body.length} bytes)`));
            return;
          }
          resolve(body.subarray(5));
        });
        stream.end(frame);
      });
    },
    close() {
      session.close();
    },
  };
}

const SIGN_PATH = `/${CaService.typeName}/${CaService.method.sign.name}`;

/** One Sign with a pre-encoded request frame; throws unless a certificate came back. */
export async function requestSign(connection: GrpcConnection, requestFrame: Buffer): Promise<void> {
  const response = fromBinary(SignResponseSchema, await connection.call(SIGN_PATH, requestFrame));
  if (!response.certificatePem.startsWith("-----BEGIN CERTIFICATE-----")) {
    throw new Error("Sign answered without a certificate");
  }
}
