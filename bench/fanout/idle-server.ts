// The fan-out bench's baseline: a plain Node HTTP/2 + TLS server with the router's certificate and TLS
// settings (mTLS required, TLS 1.3, HTTP/1 allowed, as platform/src/rpc-server.ts), and no Connect, no
// handlers, no model. It answers each call with gRPC response headers and holds the stream open; its
// resident memory per idle session is what any HTTP/2 server costs per connected agent here. A POST to
// /broadcast writes the body (base64), as one gRPC message, to every held stream: the floor of any fan-out.
//   FABRIC_IDENTITY_DIR  the identity to serve with;  FANOUT_GRPC_PORT;  FANOUT_HTTP_PORT  (/readyz, /broadcast)
import http from "node:http";
import http2 from "node:http2";
import { loadIdentity, secureContextOptions } from "@fabric/platform";

const credentials = loadIdentity(process.env.FABRIC_IDENTITY_DIR!);
const server = http2.createSecureServer({
  ...secureContextOptions(credentials),
  requestCert: true,
  rejectUnauthorized: true,
  allowHTTP1: true,
});
const streams = new Set<http2.ServerHttp2Stream>();
server.on("stream", (stream) => {
  stream.respond({ ":status": 200, "content-type": "application/grpc" });
  stream.on("error", () => {});
  streams.add(stream);
  stream.on("close", () => streams.delete(stream));
});
server.listen(Number(process.env.FANOUT_GRPC_PORT), "127.0.0.1");

http
  .createServer((req, res) => {
    if (req.method !== "POST") return res.end("ok");
    let text = "";
    req.on("data", (c: Buffer) => (text += c.toString()));
    req.on("end", () => {
      const body = Buffer.from(text, "base64");
      // gRPC length-prefixed message: uncompressed flag, big-endian length, bytes
      const frame = Buffer.alloc(5 + body.length);
      frame.writeUInt32BE(body.length, 1);
      body.copy(frame, 5);
      for (const stream of streams) stream.write(frame);
      res.end(String(streams.size));
    });
  })
  .listen(Number(process.env.FANOUT_HTTP_PORT), "127.0.0.1");
