// The CA's side of revocation retention (services/ca/src/revocation-log.ts): what its feed lists is what
// every follower's RevocationSet holds after a relist, so it must keep an entry as long as they do.
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readRevocations } from "../../services/ca/src/revocation-log.js";
import { createPool, type Pool } from "../src/database.js";
import { migrate } from "../src/migrations.js";
import { REVOCATION_RETENTION_MS } from "../src/revocation.js";
import { createTestDatabase, type TestDatabase } from "../src/testing/database.js";

const CA_MIGRATIONS = fileURLToPath(new URL("../../services/ca/migrations", import.meta.url));
let db: TestDatabase;
let pool: Pool;

beforeAll(async () => {
  db = await createTestDatabase("revfeed");
  await migrate({ url: db.url, schema: "ca", dir: CA_MIGRATIONS });
  pool = createPool({ url: db.url, schema: "ca" });
});

afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

describe("the CA's revocation feed", () => {
  it("lists a revocation until its retention past notAfter has run out, by the database's clock", async () => {
    const minute = 60_000;
    // notAfter relative to the database's now(), as the feed's filter reads it
    await pool.query(
      `INSERT INTO revocation_events (version, serial, principal_kind, principal_id, reason, revoked_at, not_after)
       SELECT v, s, 'node', 'n-' || v, 1, now() - interval '2 days', now() + make_interval(secs => ms / 1000.0)
       FROM unnest($1::bigint[], $2::text[], $3::double precision[]) AS t(v, s, ms)`,
      [
        [1, 2, 3, 4],
        ["aa01", "aa02", "aa03", ""],
        [-minute, -(REVOCATION_RETENTION_MS - minute), -(REVOCATION_RETENTION_MS + minute), -minute],
      ],
    );
    await pool.query("UPDATE revocation_head SET version = 4");

    const { head, events } = await readRevocations(pool);
    expect(head).toBe(4n);
    // expired a minute ago (a follower whose clock is behind still sees it valid), and just inside the
    // retention; the serial and the principal-wide entry alike
    expect(events.map((e) => e.version)).toEqual([1n, 2n, 4n]);
    expect((await readRevocations(pool, 1n)).events.map((e) => e.version)).toEqual([2n, 4n]);
  });
});
