import type { PeerCertificate } from "node:tls";
import type { DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createClient,
  type Client,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { inspectCertificate } from "./pki/certificates.js";
import { normalizePem } from "./pki/pem.js";
import type { TlsCredentials } from "./tls-credentials.js";
import { tracingInterceptor } from "./tracing.js";

export interface RpcClientOptions {
  /** https://host:port of the service's mTLS port. */
  url: string;
  /**
   * Our identity and trusted roots. A function is re-read on every call, so a renewed certificate is
   * picked up without rebuilding clients. Omit the key and certificate for anonymous calls (Join).
   */
  credentials: TlsCredentials | Pick<TlsCredentials, "caBundlePem"> | (() => TlsCredentials);
  /**
   * The SPIFFE ID the server must present (e.g. spiffe://td/service/ca). Checked instead of the
   * hostname, so services can be reached by any address.
   */
  expectServerId?: string;
  /** Deadline for each call unless the call sets its own. */
  timeoutMs?: number;
  /** Retries of unary calls failing with Unavailable, with exponential backoff and full jitter. */
  retries?: number;
  /**
   * HTTP/2 PING interval for long-lived streams, so a half-open connection is noticed (and the stream
   * fails and reconnects) instead of waiting forever. Off by default.
   */
  keepaliveMs?: number;
  interceptors?: Interceptor[];
}

/** The one RPC client factory: gRPC over HTTP/2 with mTLS, deadlines, tracing and retries. */
export function createRpcClient<S extends DescService>(service: S, options: RpcClientOptions): Client<S> {
  return createClient(service, createRpcTransport(options));
}

export function createRpcTransport(options: RpcClientOptions): Transport {
  const read = typeof options.credentials === "function" ? options.credentials : () => options.credentials;
  let current: { creds: unknown; transport: Transport } | undefined;
  const transportFor = (): Transport => {
    const creds = read() as Partial<TlsCredentials> & Pick<TlsCredentials, "caBundlePem">;
    if (current?.creds === creds) return current.transport;
    const transport = createGrpcTransport({
      baseUrl: options.url,
      defaultTimeoutMs: options.timeoutMs ?? 15_000,
      ...(options.keepaliveMs ? { pingIntervalMs: options.keepaliveMs, pingIdleConnection: true } : {}),
      interceptors: [
        tracingInterceptor("client"),
        retryUnavailable(options.retries ?? 3),
        ...(options.interceptors ?? []),
      ],
      nodeOptions: {
        ca: creds.caBundlePem,
        ...(creds.privateKeyPem && creds.certificatePem
          ? {
              key: creds.privateKeyPem,
              cert: [creds.certificatePem, ...(creds.chainPem ?? [])].map(normalizePem).join(""),
            }
          : {}),
        minVersion: "TLSv1.3",
        ...(options.expectServerId
          ? { checkServerIdentity: spiffeIdentityCheck(options.expectServerId) }
          : {}),
      },
    });
    current = { creds, transport };
    return transport;
  };
  return {
    unary: (...args) => transportFor().unary(...args),
    stream: (...args) => transportFor().stream(...args),
  };
}

function spiffeIdentityCheck(expected: string) {
  return (_hostname: string, cert: PeerCertificate): Error | undefined => {
    if (!cert.raw) return new Error("the server presented no certificate");
    const actual = inspectCertificate(cert.raw).spiffeId;
    return actual === expected
      ? undefined
      : new Error(`server is ${actual ?? "not a Fabric identity"}, expected ${expected}`);
  };
}

/** Retries unary calls that fail with Unavailable; streams are resumed by their callers. */
function retryUnavailable(retries: number): Interceptor {
  return (next) => async (req) => {
    if (req.stream) return next(req);
    for (let attempt = 0; ; attempt++) {
      try {
        return await next(req);
      } catch (err) {
        const retryable = err instanceof ConnectError && err.code === Code.Unavailable;
        if (!retryable || attempt >= retries || req.signal.aborted) throw err;
        await sleep(Math.random() * Math.min(2_000, 100 * 2 ** attempt), req.signal);
      }
    }
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}
