import { appendFileSync, closeSync, fstatSync, openSync, readSync } from "node:fs";
import { join } from "node:path";
import { CA_FILES } from "./ca-directory.js";
import type { CertificateRecord } from "./certificate-record.js";

/**
 * Certificates issued while no CA process (or database) was at hand, e.g. the service identities made
 * by `initCa`, the admin identity of `fabric up`, test fixtures. Each is one JSON line appended here;
 * the running CA imports new lines into its inventory (with an audit event), so every certificate the
 * intermediate ever signed shows up in ListCertificates and can be revoked by serial.
 */
export function appendOfflineRecord(caDir: string, record: CertificateRecord): void {
  // One write call per line with O_APPEND: concurrent writers never interleave within a line.
  appendFileSync(join(caDir, CA_FILES.offlineJournal), `${JSON.stringify(record)}\n`, { mode: 0o644 });
}

/**
 * Reads the journal incrementally: each call returns the records appended after the last position
 * confirmed with `done` (so records whose import failed are read again; importing is idempotent).
 */
export class OfflineJournalReader {
  private offset = 0;

  constructor(private readonly caDir: string) {}

  readNew(): { records: CertificateRecord[]; done: () => void } {
    const none = { records: [], done: () => {} };
    let fd: number;
    try {
      fd = openSync(join(this.caDir, CA_FILES.offlineJournal), "r");
    } catch {
      return none; // nothing issued offline yet
    }
    try {
      const size = fstatSync(fd).size;
      if (size <= this.offset) return none;
      const buf = Buffer.alloc(size - this.offset);
      readSync(fd, buf, 0, buf.length, this.offset);
      // Only whole lines: a writer may be mid-append.
      const whole = buf.lastIndexOf(0x0a) + 1;
      const end = this.offset + whole;
      const records = buf
        .subarray(0, whole)
        .toString("utf8")
        .split("\n")
        .filter((line) => line.trim())
        .map((line) => {
          const r = JSON.parse(line) as CertificateRecord;
          return {
            ...r,
            notBefore: new Date(r.notBefore),
            notAfter: new Date(r.notAfter),
            issuedAt: new Date(r.issuedAt),
          };
        });
      return { records, done: () => void (this.offset = Math.max(this.offset, end)) };
    } finally {
      closeSync(fd);
    }
  }
}
