import type { IncomingMessage } from "node:http";
import type { CertID } from "@peculiar/asn1-ocsp";
import {
  BasicOCSPResponse,
  CertStatus,
  OCSPRequest,
  OCSPResponse,
  OCSPResponseStatus,
  ResponderID,
  ResponseBytes,
  ResponseData,
  RevokedInfo,
  SingleResponse,
  id_pkix_ocsp_basic,
  id_pkix_ocsp_nonce,
} from "@peculiar/asn1-ocsp";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import { CRLReason, Extension } from "@peculiar/asn1-x509";
import type { Logger, PlainRoute, Pool } from "@fabric/platform";
import { wholeSeconds } from "./der.js";
import type { SigningAuthority } from "./signing-authority.js";

// CertID hash algorithms clients use (openssl defaults to SHA-1).
const HASHES: Record<string, string> = {
  "1.3.14.3.2.26": "sha1",
  "2.16.840.1.101.3.4.2.1": "sha256",
  "2.16.840.1.101.3.4.2.2": "sha384",
  "2.16.840.1.101.3.4.2.3": "sha512",
};

const MAX_REQUEST_BYTES = 64 * 1024;
const MAX_CERTS_PER_REQUEST = 64;

interface Status {
  revokedAt?: Date;
  reason?: number;
}

export interface OcspOptions {
  /** How long a response may be cached: its nextUpdate. */
  validityMs: number;
  logger: Logger;
  /** Brings offline-issued certificates into the inventory before a serial is answered "unknown". */
  importOffline: () => Promise<void>;
}

/**
 * RFC 6960 OCSP responder signed directly by the intermediate (the CA that issued the certificates, so
 * clients need no delegated responder certificate). Answers good, revoked (time and reason) or unknown
 * (not issued by us), echoes the request nonce, and serves POST /ocsp and GET /ocsp/<base64 request>.
 */
export class OcspResponder {
  constructor(
    private readonly pool: Pool,
    private readonly authority: SigningAuthority,
    private readonly options: OcspOptions,
  ) {}

  async respond(requestDer: Buffer): Promise<Buffer> {
    let request: OCSPRequest;
    try {
      request = AsnConvert.parse(requestDer, OCSPRequest);
    } catch {
      return failure(OCSPResponseStatus.malformedRequest);
    }
    const items = request.tbsRequest.requestList;
    if (items.length === 0 || items.length > MAX_CERTS_PER_REQUEST) {
      return failure(OCSPResponseStatus.malformedRequest);
    }
    const ours = items.map((item) => this.serialIfOurs(item.reqCert));
    const serials = ours.filter((s): s is string => s !== undefined);
    let statuses = await this.lookup(serials);
    if (statuses.size < serials.length) {
      await this.options.importOffline();
      statuses = await this.lookup(serials);
    }
    const now = wholeSeconds(new Date());
    const responses = items.map((item, i) => {
      const serial = ours[i];
      const status = serial === undefined ? undefined : statuses.get(serial);
      let certStatus: CertStatus;
      if (!status) certStatus = new CertStatus({ unknown: null });
      else if (status.revokedAt) {
        certStatus = new CertStatus({
          revoked: new RevokedInfo({
            revocationTime: wholeSeconds(status.revokedAt),
            ...(status.reason ? { revocationReason: new CRLReason(status.reason) } : {}),
          }),
        });
      } else certStatus = new CertStatus({ good: null });
      return new SingleResponse({
        certID: item.reqCert,
        certStatus,
        thisUpdate: now,
        nextUpdate: new Date(now.getTime() + this.options.validityMs),
      });
    });
    const nonce = request.tbsRequest.requestExtensions?.find((e) => e.extnID === id_pkix_ocsp_nonce);
    const data = new ResponseData({
      responderID: new ResponderID({ byKey: new OctetString(this.authority.certIdHashes("sha1").keyHash) }),
      producedAt: now,
      responses,
      ...(nonce
        ? { responseExtensions: [new Extension({ extnID: id_pkix_ocsp_nonce, extnValue: nonce.extnValue })] }
        : {}),
    });
    const basic = new BasicOCSPResponse({
      tbsResponseData: data,
      signatureAlgorithm: this.authority.signatureAlgorithm,
      signature: this.authority.sign(AsnConvert.serialize(data)),
      certs: [this.authority.certificate],
    });
    return Buffer.from(
      AsnConvert.serialize(
        new OCSPResponse({
          responseStatus: OCSPResponseStatus.successful,
          responseBytes: new ResponseBytes({
            responseType: id_pkix_ocsp_basic,
            response: new OctetString(AsnConvert.serialize(basic)),
          }),
        }),
      ),
    );
  }

  /** The serial (lowercase hex) when the CertID names our intermediate as issuer. */
  private serialIfOurs(id: CertID): string | undefined {
    const hash = HASHES[id.hashAlgorithm.algorithm];
    if (!hash) return undefined;
    const expected = this.authority.certIdHashes(hash);
    const nameHash = Buffer.from(id.issuerNameHash.buffer);
    const keyHash = Buffer.from(id.issuerKeyHash.buffer);
    if (!nameHash.equals(expected.nameHash) || !keyHash.equals(expected.keyHash)) return undefined;
    return Buffer.from(id.serialNumber).toString("hex").replace(/^0+/, "");
  }

  private async lookup(serials: string[]): Promise<Map<string, Status>> {
    if (serials.length === 0) return new Map();
    const { rows } = await this.pool.query<{
      serial: string;
      revoked_at: Date | null;
      revocation_reason: number | null;
    }>("SELECT serial, revoked_at, revocation_reason FROM certificates WHERE serial = ANY($1::text[])", [
      serials,
    ]);
    return new Map(
      rows.map((r) => [
        r.serial,
        r.revoked_at ? { revokedAt: r.revoked_at, reason: r.revocation_reason ?? 0 } : {},
      ]),
    );
  }

  readonly route: PlainRoute = async (req, res) => {
    let body: Buffer | undefined;
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (req.method === "POST" && path === "/ocsp") body = await readBody(req);
    else if (req.method === "GET" && path.startsWith("/ocsp/")) {
      body = Buffer.from(decodeURIComponent(path.slice("/ocsp/".length)), "base64");
    }
    if (!body) {
      res.writeHead(405, { allow: "POST /ocsp, GET /ocsp/<base64 request>" }).end();
      return;
    }
    let answer: Buffer;
    try {
      answer = await this.respond(body);
    } catch (err) {
      this.options.logger.error({ err }, "OCSP response failed");
      answer = failure(OCSPResponseStatus.internalError);
    }
    res.writeHead(200, { "content-type": "application/ocsp-response", "content-length": answer.length });
    res.end(answer);
  };
}

function failure(status: OCSPResponseStatus): Buffer {
  return Buffer.from(AsnConvert.serialize(new OCSPResponse({ responseStatus: status })));
}

async function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_REQUEST_BYTES) return Buffer.alloc(0); // answered as a malformed request
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * Plain routes match whole paths, while RFC 6960 GET puts the request in the path (/ocsp/<base64>):
 * this routes table also answers every path under `prefix` with `route`.
 */
export function withPrefixRoute(
  routes: Record<string, PlainRoute>,
  prefix: string,
  route: PlainRoute,
): Record<string, PlainRoute> {
  return new Proxy(routes, {
    get(target, key, receiver) {
      if (typeof key === "string" && key.startsWith(prefix) && !(key in target)) return route;
      return Reflect.get(target, key, receiver) as unknown;
    },
  });
}
