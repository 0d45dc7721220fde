import {
  decodePageToken,
  encodePageToken,
  pageSize,
  type Pool,
  type PrincipalKind,
  type Tx,
} from "@fabric/platform";
import type { CertificateRecord } from "./certificate-record.js";

/** A certificate as the inventory holds it now. */
export interface StoredCertificate extends CertificateRecord {
  seq: bigint;
  revokedAt?: Date;
  revocationReason?: number;
}

interface Row {
  seq: string;
  serial: string;
  principal_kind: PrincipalKind;
  principal_id: string;
  cluster_id: string;
  organization_id: string;
  grants: string[];
  spiffe_id: string;
  not_before: Date;
  not_after: Date;
  fingerprint_sha256: string;
  public_key_sha256: string | null;
  authorization_ref: string;
  issued_at: Date;
  revoked_at: Date | null;
  revocation_reason: number | null;
}

const COLUMNS = `seq::text, serial, principal_kind, principal_id, cluster_id, organization_id, grants, spiffe_id,
  not_before, not_after, fingerprint_sha256, public_key_sha256, authorization_ref, issued_at, revoked_at,
  revocation_reason`;

function fromRow(r: Row): StoredCertificate {
  const cert: StoredCertificate = {
    seq: BigInt(r.seq),
    serial: r.serial,
    principalKind: r.principal_kind,
    principalId: r.principal_id,
    clusterId: r.cluster_id,
    organizationId: r.organization_id,
    grants: r.grants,
    spiffeId: r.spiffe_id,
    notBefore: r.not_before,
    notAfter: r.not_after,
    fingerprintSha256: r.fingerprint_sha256,
    authorizationRef: r.authorization_ref,
    issuedAt: r.issued_at,
  };
  if (r.public_key_sha256) cert.publicKeySha256 = r.public_key_sha256;
  if (r.revoked_at) cert.revokedAt = r.revoked_at;
  if (r.revocation_reason !== null) cert.revocationReason = r.revocation_reason;
  return cert;
}

/**
 * Inserts issued certificates in one statement (the group commit's batch). Returns the serials that
 * were new: re-imported offline records are skipped.
 */
export async function insertCertificates(tx: Tx, records: CertificateRecord[]): Promise<Set<string>> {
  const { rows } = await tx.query<{ serial: string }>(
    `INSERT INTO certificates (serial, principal_kind, principal_id, cluster_id, organization_id, grants,
       spiffe_id, not_before, not_after, fingerprint_sha256, authorization_ref, issued_at, public_key_sha256)
     SELECT s, k, i, c, o, ARRAY(SELECT jsonb_array_elements_text(g)), u, nb, na, f, a, ia, pk
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::text[],
                   $8::timestamptz[], $9::timestamptz[], $10::text[], $11::text[], $12::timestamptz[],
                   $13::text[])
         AS t(s, k, i, c, o, g, u, nb, na, f, a, ia, pk)
     ON CONFLICT (serial) DO NOTHING
     RETURNING serial`,
    [
      records.map((r) => r.serial),
      records.map((r) => r.principalKind),
      records.map((r) => r.principalId),
      records.map((r) => r.clusterId),
      records.map((r) => r.organizationId),
      records.map((r) => JSON.stringify(r.grants)),
      records.map((r) => r.spiffeId),
      records.map((r) => r.notBefore),
      records.map((r) => r.notAfter),
      records.map((r) => r.fingerprintSha256),
      records.map((r) => r.authorizationRef),
      records.map((r) => r.issuedAt),
      records.map((r) => r.publicKeySha256 ?? null),
    ],
  );
  return new Set(rows.map((r) => r.serial));
}

export async function findCertificate(pool: Pool, serial: string): Promise<StoredCertificate | undefined> {
  const { rows } = await pool.query<Row>(`SELECT ${COLUMNS} FROM certificates WHERE serial = $1`, [serial]);
  return rows[0] ? fromRow(rows[0]) : undefined;
}

/**
 * Locks and returns certificates for revocation, inside the revoking transaction: one by serial (in any
 * state), or the current ones of a principal or carrying one of some keys (in one cluster, when named).
 */
export async function lockCertificates(
  tx: Tx,
  where:
    | { serial: string }
    | { kind: PrincipalKind; id: string; clusterId?: string }
    | { publicKeys: string[]; clusterId?: string },
): Promise<StoredCertificate[]> {
  if ("serial" in where) {
    const { rows } = await tx.query<Row>(`SELECT ${COLUMNS} FROM certificates WHERE serial = $1 FOR UPDATE`, [
      where.serial,
    ]);
    return rows.map(fromRow);
  }
  if ("publicKeys" in where) {
    const { rows } = await tx.query<Row>(
      `SELECT ${COLUMNS} FROM certificates
        WHERE public_key_sha256 = ANY($1::text[]) AND ($2 = '' OR cluster_id = $2)
          AND revoked_at IS NULL AND not_after > now()
        ORDER BY issued_at, seq FOR UPDATE`,
      [where.publicKeys, where.clusterId ?? ""],
    );
    return rows.map(fromRow);
  }
  const { rows } = await tx.query<Row>(
    `SELECT ${COLUMNS} FROM certificates
      WHERE principal_kind = $1 AND principal_id = $2 AND ($3 = '' OR cluster_id = $3)
        AND revoked_at IS NULL AND not_after > now()
      ORDER BY issued_at, seq FOR UPDATE`,
    [where.kind, where.id, where.clusterId ?? ""],
  );
  return rows.map(fromRow);
}

export type CertificateStatusFilter = "any" | "active" | "revoked" | "expired";

export interface CertificateFilter {
  principalId?: string;
  principalKind?: PrincipalKind;
  clusterId?: string;
  organizationId?: string;
  status: CertificateStatusFilter;
}

/** Page tokens are bound to the filters they were issued for (platform paging). */
function pageScope(filter: CertificateFilter): string {
  return `ListCertificates|${JSON.stringify(filter)}`;
}

/** Keyset position of a certificate in the newest-first order. */
const positionOf = (c: StoredCertificate) => [c.issuedAt.getTime(), c.seq.toString()];

/** Newest issued first; `pageSize + 1` rows are read to know whether another page follows. */
export async function listCertificates(
  pool: Pool,
  filter: CertificateFilter,
  page: { pageSize: number; pageToken: string },
): Promise<{ certificates: StoredCertificate[]; nextPageToken: string }> {
  const size = pageSize(page.pageSize);
  const after = decodePageToken(page.pageToken, pageScope(filter));
  const where: string[] = [];
  const args: unknown[] = [];
  const add = (sql: string, value: unknown) => {
    args.push(value);
    where.push(sql.replace("?", `$${args.length}`));
  };
  if (filter.principalId) add("principal_id = ?", filter.principalId);
  if (filter.principalKind) add("principal_kind = ?", filter.principalKind);
  if (filter.clusterId) add("cluster_id = ?", filter.clusterId);
  if (filter.organizationId) add("organization_id = ?", filter.organizationId);
  if (filter.status === "active") where.push("revoked_at IS NULL AND not_after > now()");
  if (filter.status === "revoked") where.push("revoked_at IS NOT NULL");
  if (filter.status === "expired") where.push("revoked_at IS NULL AND not_after <= now()");
  if (after) {
    args.push(new Date(Number(after[0])), String(after[1]));
    where.push(`(issued_at, seq) < ($${args.length - 1}, $${args.length})`);
  }
  args.push(size + 1);
  const { rows } = await pool.query<Row>(
    `SELECT ${COLUMNS} FROM certificates ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
      ORDER BY issued_at DESC, seq DESC LIMIT $${args.length}`,
    args,
  );
  const certificates = rows.slice(0, size).map(fromRow);
  const more = rows.length > size;
  return {
    certificates,
    nextPageToken: more ? encodePageToken(positionOf(certificates.at(-1)!), pageScope(filter)) : "",
  };
}
