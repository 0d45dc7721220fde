import { randomBytes } from "node:crypto";
import pg from "pg";
import { roleUrl, serviceRoleName } from "../database-roles.js";

/** The Postgres tests run against: DATABASE_URL, else the local server on 127.0.0.1:5432. */
export function adminDatabaseUrl(): string {
  return process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
}

export interface TestDatabase {
  /** As the admin (superuser): bootstraps services, reads every schema, tampers in tests. */
  url: string;
  name: string;
  /**
   * As a service's own login role (fabric_<service>, no password: the test server trusts local
   * connections); valid once that service's schema is bootstrapped (bootstrapServiceDatabase, or a
   * service started with the admin URL).
   */
  serviceUrl(service: string): string;
  drop(): Promise<void>;
}

/** A fresh, empty database for one test file; drop() removes it (terminating leftover connections). */
export async function createTestDatabase(label = "t"): Promise<TestDatabase> {
  const name = `fabric_${label
    .replace(/[^a-z0-9]/gi, "")
    .toLowerCase()
    .slice(0, 20)}_${randomBytes(5).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminDatabaseUrl() });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminDatabaseUrl());
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    serviceUrl: (service) => roleUrl(url.toString(), serviceRoleName(service)),
    async drop() {
      const c = new pg.Client({ connectionString: adminDatabaseUrl() });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}
