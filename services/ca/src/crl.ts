import type { Logger, PlainRoute, Pool } from "@fabric/platform";
import { certificateList, crlSigner, tbsCertList, type CrlEntry, type CrlSigner } from "./crl-encoding.js";
import { wholeSeconds } from "./der.js";
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
  private readonly signer: CrlSigner;

  constructor(
    private readonly pool: Pool,
    private readonly authority: SigningAuthority,
    private readonly options: CrlOptions,
  ) {
    this.signer = crlSigner(authority);
  }

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
    const [entries, { rows }] = await Promise.all([
      crlEntries(this.pool),
      this.pool.query<{ n: string }>("SELECT nextval('crl_number')::text AS n"),
    ]);
    const thisUpdate = wholeSeconds(new Date());
    const tbs = tbsCertList(this.signer, {
      number: BigInt(rows[0]!.n),
      thisUpdate,
      nextUpdate: new Date(thisUpdate.getTime() + 2 * this.options.refreshMs),
      entries,
    });
    this.der = certificateList(this.signer, tbs, Buffer.from(this.authority.sign(tbs)));
    this.options.logger.debug({ entries: entries.length, number: rows[0]!.n }, "CRL rebuilt");
  }
}

/**
 * The CRL's entries: revoked certificates that have not expired, oldest revocation first. Times come as
 * whole epoch seconds and rows as arrays: at 100,000 rows, pg's timestamptz parsing into Dates took about
 * as long as the query itself.
 */
export async function crlEntries(pool: Pool): Promise<CrlEntry[]> {
  const { rows } = await pool.query<[string, string, number]>({
    text: `SELECT serial, floor(extract(epoch FROM revoked_at))::int8, revocation_reason FROM certificates
            WHERE revoked_at IS NOT NULL AND not_after > now() ORDER BY revoked_at, serial`,
    rowMode: "array",
  });
  return rows.map(([serial, revokedAt, reason]) => ({ serial, revokedAt: Number(revokedAt), reason }));
}
