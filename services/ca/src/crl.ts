import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import {
  CRLNumber,
  CRLReason,
  CertificateList,
  Extension,
  Name,
  RevokedCertificate,
  TBSCertList,
  Time,
  Version,
  id_ce_cRLNumber,
  id_ce_cRLReasons,
} from "@peculiar/asn1-x509";
import type { Logger, PlainRoute, Pool } from "@fabric/platform";
import { wholeSeconds } from "./der.js";
import { revokedUnexpired } from "./inventory.js";
import type { SigningAuthority } from "./signing-authority.js";

export interface CrlOptions {
  /** Scheduled rebuild period; nextUpdate leaves room for one missed rebuild (2 × this). */
  refreshMs: number;
  /** Revocations arriving within this window share one rebuild. */
  debounceMs: number;
  logger: Logger;
}

/**
 * The CRL: signed by the intermediate, listing revoked certificates that have not expired (expired ones
 * drop off), with a CRLNumber that only grows. Rebuilt after revocations (debounced) and on schedule;
 * served as DER from memory at /crl on the plain port.
 */
export class CrlPublisher {
  private der: Buffer | undefined;
  private building: Promise<void> = Promise.resolve();
  private debounce: NodeJS.Timeout | undefined;
  private schedule: NodeJS.Timeout | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly authority: SigningAuthority,
    private readonly options: CrlOptions,
  ) {}

  /** Builds now (queued behind a build in progress); resolves when the new CRL is being served. */
  rebuild(): Promise<void> {
    this.building = this.building.then(() =>
      this.build().catch((err: unknown) => this.options.logger.error({ err }, "CRL rebuild failed")),
    );
    return this.building;
  }

  requestRebuild(): void {
    if (this.debounce) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      void this.rebuild();
    }, this.options.debounceMs);
  }

  start(): void {
    this.schedule = setInterval(() => void this.rebuild(), this.options.refreshMs);
    this.schedule.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.schedule);
    clearTimeout(this.debounce);
    await this.building;
  }

  readonly route: PlainRoute = (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (!this.der) {
      res
        .writeHead(503, { "content-type": "text/plain; charset=utf-8", "retry-after": "1" })
        .end("CRL not built yet\n");
      return;
    }
    res.writeHead(200, { "content-type": "application/pkix-crl", "content-length": this.der.length });
    res.end(req.method === "HEAD" ? undefined : this.der);
  };

  private async build(): Promise<void> {
    const revoked = await revokedUnexpired(this.pool);
    const { rows } = await this.pool.query<{ n: string }>("SELECT nextval('crl_number')::text AS n");
    const thisUpdate = wholeSeconds(new Date());
    const tbs = new TBSCertList({
      version: Version.v2,
      signature: this.authority.signatureAlgorithm,
      issuer: AsnConvert.parse(this.authority.subjectDer, Name),
      thisUpdate: new Time(thisUpdate),
      nextUpdate: new Time(new Date(thisUpdate.getTime() + 2 * this.options.refreshMs)),
      crlExtensions: [
        this.authority.authorityKeyIdentifier,
        new Extension({
          extnID: id_ce_cRLNumber,
          critical: false,
          extnValue: new OctetString(AsnConvert.serialize(new CRLNumber(Number(rows[0]!.n)))),
        }),
      ],
    });
    if (revoked.length > 0) {
      tbs.revokedCertificates = revoked.map(
        (r) =>
          new RevokedCertificate({
            userCertificate: serialBytes(r.serial),
            revocationDate: new Time(wholeSeconds(r.revokedAt)),
            // RFC 5280 5.3.1: omit the reason code rather than write `unspecified`.
            ...(r.reason
              ? {
                  crlEntryExtensions: [
                    new Extension({
                      extnID: id_ce_cRLReasons,
                      critical: false,
                      extnValue: new OctetString(AsnConvert.serialize(new CRLReason(r.reason))),
                    }),
                  ],
                }
              : {}),
          }),
      );
    }
    const tbsDer = AsnConvert.serialize(tbs);
    const crl = new CertificateList({
      tbsCertList: tbs,
      signatureAlgorithm: this.authority.signatureAlgorithm,
      signature: this.authority.sign(tbsDer),
    });
    this.der = Buffer.from(AsnConvert.serialize(crl));
    this.options.logger.debug({ entries: revoked.length, number: rows[0]!.n }, "CRL rebuilt");
  }
}

/** INTEGER content bytes of a hex serial (a leading 0x00 keeps a high-bit serial positive). */
function serialBytes(hex: string): ArrayBuffer {
  const bytes = Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex");
  const positive = bytes[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes;
  return new Uint8Array(positive).buffer;
}
