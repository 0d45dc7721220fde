import { existsSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { CA_FILES, readCaCertificate, readCaMeta } from "./ca-directory.js";
import { summarize, type CaCertificateSummary } from "./init.js";

export interface CaStatusOptions {
  caDir: string;
  /** The CA's database; without it the counts are left out. */
  databaseUrl?: string;
}

export interface CaStatus {
  dir: string;
  trustDomain: string;
  root: CaCertificateSummary & {
    /** False once the root key has been moved away (the CA runs without it). */
    keyPresent: boolean;
  };
  intermediate: CaCertificateSummary;
  /** From the CA's inventory; absent without a database or before the CA first started. */
  counts?: { issued: number; revoked: number; active: number };
}

/** What `fabric ca status` shows: fingerprints, expiries, where the root key is, issued/revoked counts. */
export async function caStatus(options: CaStatusOptions): Promise<CaStatus> {
  const meta = readCaMeta(options.caDir);
  const status: CaStatus = {
    dir: options.caDir,
    trustDomain: meta.trustDomain,
    root: {
      ...summarize(readCaCertificate(options.caDir, "root")),
      keyPresent: existsSync(join(options.caDir, CA_FILES.rootKey)),
    },
    intermediate: summarize(readCaCertificate(options.caDir, "intermediate")),
  };
  if (options.databaseUrl) {
    const counts = await inventoryCounts(options.databaseUrl);
    if (counts) status.counts = counts;
  }
  return status;
}

async function inventoryCounts(url: string): Promise<CaStatus["counts"]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const exists = await client.query<{ t: string | null }>(
      "SELECT to_regclass('ca.certificates')::text AS t",
    );
    if (!exists.rows[0]?.t) return undefined;
    const { rows } = await client.query<{ issued: string; revoked: string; active: string }>(
      `SELECT count(*)::text AS issued,
              count(revoked_at)::text AS revoked,
              count(*) FILTER (WHERE revoked_at IS NULL AND not_after > now())::text AS active
         FROM ca.certificates`,
    );
    const row = rows[0]!;
    return { issued: Number(row.issued), revoked: Number(row.revoked), active: Number(row.active) };
  } finally {
    await client.end();
  }
}
