// A hostile HTTP/2 client that writes frames itself, so it can ignore what the server's SETTINGS allow
// (Node's own client would queue streams past SETTINGS_MAX_CONCURRENT_STREAMS instead of sending them).
import tls from "node:tls";

const FRAME = { DATA: 0x0, HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, GOAWAY: 0x7 } as const;
const END_HEADERS = 0x4;
const ACK = 0x1;

export interface RawH2Connection {
  /** SETTINGS the server sent: id → value (0x3 MAX_CONCURRENT_STREAMS, 0x6 MAX_HEADER_LIST_SIZE). */
  settings: Map<number, number>;
  /** RST_STREAM error codes the server sent, by stream id. */
  resets: Map<number, number>;
  /** Error code of the server's GOAWAY, if one came. */
  goaway: number | undefined;
  /** True once the TCP connection has closed. */
  closed: boolean;
  /** Resolves when the TLS handshake is done and the server's first SETTINGS arrived. */
  ready: Promise<void>;
  /** Resolves when the connection closes. */
  closedPromise: Promise<void>;
  /** Opens `count` POST streams to `path` whose request body never comes; returns their ids. */
  openStreams(count: number, path: string): number[];
  /** Resolves when `test` holds after some frame from the server, or the connection closes. */
  until(test: () => boolean): Promise<void>;
  destroy(): void;
}

function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header.writeUInt8(type, 3);
  header.writeUInt8(flags, 4);
  header.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([header, payload]);
}

/** HPACK "literal header field without indexing, new name" (RFC 7541 6.2.2), short strings only. */
function literal(name: string, value: string): Buffer {
  if (name.length > 126 || value.length > 126) throw new Error("raw-h2 encodes short headers only");
  return Buffer.concat([
    Buffer.from([0x00, name.length]),
    Buffer.from(name),
    Buffer.from([value.length]),
    Buffer.from(value),
  ]);
}

export function rawH2(url: string, options: { ca: string; key?: string; cert?: string }): RawH2Connection {
  const { hostname, port } = new URL(url);
  const socket = tls.connect({
    host: hostname,
    port: Number(port),
    ca: options.ca,
    ...(options.key && options.cert ? { key: options.key, cert: options.cert } : {}),
    ALPNProtocols: ["h2"],
    checkServerIdentity: () => undefined,
  });
  let nextId = 1;
  let buffered = Buffer.alloc(0);
  let gotSettings!: () => void;
  const waiters = new Set<() => void>();
  const conn: RawH2Connection = {
    settings: new Map(),
    resets: new Map(),
    goaway: undefined,
    closed: false,
    ready: new Promise<void>((resolve) => (gotSettings = resolve)),
    closedPromise: new Promise<void>((resolve) => socket.once("close", () => resolve())),
    openStreams(count, path) {
      const block = Buffer.concat([
        literal(":method", "POST"),
        literal(":scheme", "https"),
        literal(":authority", `${hostname}:${port}`),
        literal(":path", path),
        literal("content-type", "application/grpc"),
        literal("te", "trailers"),
      ]);
      const ids: number[] = [];
      const frames: Buffer[] = [];
      for (let i = 0; i < count; i++) {
        ids.push(nextId);
        frames.push(frame(FRAME.HEADERS, END_HEADERS, nextId, block));
        nextId += 2;
      }
      socket.write(Buffer.concat(frames));
      return ids;
    },
    until(test) {
      return new Promise<void>((resolve) => {
        const check = () => {
          if (!test() && !conn.closed) return;
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
        check();
      });
    },
    destroy: () => socket.destroy(),
  };
  const notify = () => {
    for (const w of [...waiters]) w();
  };
  socket.on("error", () => {});
  socket.once("close", () => {
    conn.closed = true;
    notify();
  });
  socket.once("secureConnect", () => {
    socket.write(Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    socket.write(frame(FRAME.SETTINGS, 0, 0, Buffer.alloc(0)));
  });
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 9) {
      const length = buffered.readUIntBE(0, 3);
      if (buffered.length < 9 + length) break;
      const type = buffered.readUInt8(3);
      const flags = buffered.readUInt8(4);
      const streamId = buffered.readUInt32BE(5) & 0x7fffffff;
      const payload = buffered.subarray(9, 9 + length);
      buffered = buffered.subarray(9 + length);
      if (type === FRAME.SETTINGS && !(flags & ACK)) {
        for (let i = 0; i + 6 <= payload.length; i += 6) {
          conn.settings.set(payload.readUInt16BE(i), payload.readUInt32BE(i + 2));
        }
        socket.write(frame(FRAME.SETTINGS, ACK, 0, Buffer.alloc(0)));
        gotSettings();
      } else if (type === FRAME.RST_STREAM) {
        conn.resets.set(streamId, payload.readUInt32BE(0));
      } else if (type === FRAME.GOAWAY) {
        conn.goaway = payload.readUInt32BE(4);
      }
    }
    notify();
  });
  return conn;
}
