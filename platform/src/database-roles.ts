import { createHash, createHmac, pbkdf2Sync, randomBytes } from "node:crypto";
import pg from "pg";
import { ConfigError } from "./config.js";
import { migrate, pendingMigrations } from "./migrations.js";

/**
 * Least privilege in Postgres. Each service runs as its own login role (fabric_<service> unless its
 * DATABASE_URL names another): not a superuser, no CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS, member
 * of no role, owner of nothing — so it cannot set session_replication_role, disable or drop triggers,
 * alter tables, or reach another service's schema. Its grants on its own schema are set by the bootstrap
 * (migrations.ts, grantServiceRole): read and write on its tables, but only SELECT and INSERT on the
 * audit log and its checkpoints. The bootstrap (role, schema, migrations, grants) runs over a separate
 * admin connection — a superuser, or a role with CREATEROLE that owns the schema — which the service
 * process closes before it serves, or never sees at all when `fabric up` or the service's `bootstrap`
 * command does it.
 */

const ROLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** The login role a service runs as when its URL does not name one. */
export const serviceRoleName = (schema: string) => `fabric_${schema}`;

/** `adminUrl` connecting as `role` instead, with `password` (or none: trust, peer or certificate auth). */
export function roleUrl(adminUrl: string, role: string, password?: string): string {
  const url = new URL(adminUrl);
  url.username = role;
  url.password = password ? encodeURIComponent(password) : "";
  return url.toString();
}

interface Role {
  name: string;
  password?: string;
}

function roleOf(serviceUrl: string): Role {
  const url = new URL(serviceUrl);
  const name = decodeURIComponent(url.username);
  if (!ROLE_NAME.test(name)) {
    throw new ConfigError([
      `DATABASE_URL: the service's role must be named in the URL, in lowercase letters, digits and _ (e.g. postgres://fabric_registry:<password>@host/db)`,
    ]);
  }
  const password = url.password ? decodeURIComponent(url.password) : undefined;
  // The verifier is computed here (below) so the password never reaches Postgres, or its log, in clear;
  // Postgres normalizes non-ASCII passwords (SASLprep) in ways this would have to copy exactly.
  if (password !== undefined && !/^[\x21-\x7e]+$/.test(password)) {
    throw new ConfigError([
      "DATABASE_URL: the role's password must be printable ASCII (e.g. openssl rand -hex 24)",
    ]);
  }
  return { name, ...(password !== undefined ? { password } : {}) };
}

/** A SCRAM-SHA-256 verifier in Postgres' stored form (RFC 5802/7677), so ALTER ROLE never carries the password. */
export function scramVerifier(password: string, salt = randomBytes(16), iterations = 4096): string {
  const salted = pbkdf2Sync(password, salt, iterations, 32, "sha256");
  const clientKey = createHmac("sha256", salted).update("Client Key").digest();
  const storedKey = createHash("sha256").update(clientKey).digest();
  const serverKey = createHmac("sha256", salted).update("Server Key").digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString("base64")}$${storedKey.toString("base64")}:${serverKey.toString("base64")}`;
}

const ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS";

const sqlState = (err: unknown) => (err as { code?: string }).code;

/**
 * Roles belong to the whole server, and several databases on it (test files, Fabrics side by side) may
 * bootstrap the same role at once; advisory locks are per database and cannot serialize them. So each
 * step looks first and changes only what differs: a role created by someone else meanwhile ("already
 * exists") is looked at again, and a concurrent update of the same catalog row is retried.
 */
async function ensureRole(admin: pg.Client, role: Role): Promise<void> {
  const ident = admin.escapeIdentifier(role.name);
  for (let attempt = 1; ; attempt++) {
    try {
      const found = await admin.query<{ ok: boolean }>(
        `SELECT rolcanlogin AND NOT (rolsuper OR rolcreatedb OR rolcreaterole OR rolinherit OR rolreplication
           OR rolbypassrls) AS ok FROM pg_roles WHERE rolname = $1`,
        [role.name],
      );
      if (!found.rows[0]) await admin.query(`CREATE ROLE ${ident} ${ROLE_ATTRIBUTES}`);
      else if (!found.rows[0].ok) await admin.query(`ALTER ROLE ${ident} ${ROLE_ATTRIBUTES}`);
      if (role.password !== undefined && !(await passwordIsSet(admin, role.name, role.password))) {
        await admin.query(
          `ALTER ROLE ${ident} PASSWORD ${admin.escapeLiteral(scramVerifier(role.password))}`,
        );
      }
      return;
    } catch (err) {
      // duplicate_object, or unique_violation when the other creation committed while this one waited;
      // "tuple concurrently updated" (XX000): another session altered the same role in the meantime.
      if (attempt >= 5 || !["42710", "23505", "XX000"].includes(sqlState(err) ?? "")) throw err;
    }
  }
}

/** Whether the role's stored verifier is already this password's (readable by a superuser only). */
async function passwordIsSet(admin: pg.Client, role: string, password: string): Promise<boolean> {
  const stored = await admin
    .query<{ rolpassword: string | null }>("SELECT rolpassword FROM pg_authid WHERE rolname = $1", [role])
    .then(
      (r) => r.rows[0]?.rolpassword ?? "",
      () => "",
    );
  const scram = /^SCRAM-SHA-256\$(\d+):([^$]+)\$/.exec(stored);
  return !!scram && scramVerifier(password, Buffer.from(scram[2]!, "base64"), Number(scram[1])) === stored;
}

export interface BootstrapOptions {
  /** An admin connection: a superuser, or a role with CREATEROLE that owns (or may create) the schema. */
  adminUrl: string;
  /** The URL the service will connect with: its user is the role to create, its password that role's. */
  serviceUrl: string;
  schema: string;
  /** The service's folder of numbered SQL migrations. */
  dir: string;
}

/**
 * Creates or updates the service's login role, creates the schema, applies the pending migrations as the
 * admin (so the admin owns every object) and grants the role least privilege on the schema. Idempotent;
 * safe to run from several processes at once. Returns the migrations applied.
 */
export async function bootstrapServiceDatabase(options: BootstrapOptions): Promise<string[]> {
  const role = roleOf(options.serviceUrl);
  const admin = new pg.Client({ connectionString: options.adminUrl });
  await admin.connect();
  try {
    const me = await admin.query<{ user: string }>('SELECT current_user AS "user"');
    if (me.rows[0]!.user === role.name) {
      throw new ConfigError([
        `DATABASE_URL: the service would run as "${role.name}", the role that bootstraps its schema; give it a role of its own`,
      ]);
    }
    await ensureRole(admin, role);
  } finally {
    await admin.end();
  }
  return migrate({ url: options.adminUrl, schema: options.schema, dir: options.dir, serviceRole: role.name });
}

/** What the service's own connection may do that it must not. */
async function privilegeProblems(url: string, schema: string): Promise<{ role: string; problems: string[] }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<Record<string, boolean> & { role: string }>(
      `SELECT r.rolname AS role, r.rolsuper AS superuser, r.rolcreaterole AS createrole, r.rolcreatedb AS createdb,
         r.rolreplication AS replication, r.rolbypassrls AS bypassrls,
         EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid) AS member,
         EXISTS (SELECT 1 FROM pg_database d WHERE d.datname = current_database() AND pg_has_role(r.oid, d.datdba, 'MEMBER')) AS owns_database,
         EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = $1 AND pg_has_role(r.oid, n.nspowner, 'MEMBER')) AS owns_schema,
         EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $1 AND pg_has_role(r.oid, c.relowner, 'MEMBER')) AS owns_tables
       FROM pg_roles r WHERE r.rolname = current_user`,
      [schema],
    );
    const r = rows[0]!;
    const problems = [
      ...(r.superuser ? ["is a superuser"] : []),
      ...(r.createrole ? ["may create roles"] : []),
      ...(r.createdb ? ["may create databases"] : []),
      ...(r.replication ? ["may replicate"] : []),
      ...(r.bypassrls ? ["bypasses row security"] : []),
      ...(r.member ? ["is a member of other roles"] : []),
      ...(r.owns_database ? ["owns the database"] : []),
      ...(r.owns_schema || r.owns_tables
        ? [`owns the ${schema} schema or its tables (and so could disable their triggers)`]
        : []),
    ];
    return { role: r.role, problems };
  } finally {
    await client.end();
  }
}

/** Whether a URL's role may bootstrap: create roles (a superuser, or CREATEROLE). */
async function canBootstrap(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ admin: boolean }>(
      "SELECT rolsuper OR rolcreaterole AS admin FROM pg_roles WHERE rolname = current_user",
    );
    return rows[0]!.admin;
  } finally {
    await client.end();
  }
}

export interface ServiceDatabaseOptions {
  /** DATABASE_URL. */
  url: string;
  /** FABRIC_DATABASE_ADMIN_URL. */
  adminUrl?: string;
  schema: string;
  dir: string;
}

/**
 * Readies the service's schema and returns the URL the service connects with, refusing to start on one
 * whose role could bypass the audit log:
 *   - with an admin URL: bootstraps with it; the service runs as DATABASE_URL's role;
 *   - with a DATABASE_URL that may create roles (a development server with a superuser URL): bootstraps
 *     with it, and the service runs as fabric_<service> on the same server without a password (trust,
 *     peer or certificate authentication);
 *   - otherwise DATABASE_URL is the service's own role and the schema must already be bootstrapped
 *     (`fabric up`, or the service's `bootstrap` command).
 */
export async function prepareServiceDatabase(options: ServiceDatabaseOptions): Promise<string> {
  try {
    return await prepare(options);
  } catch (err) {
    // Who may not log in is configuration, not an outage: say which setting, never the URL itself.
    if (!LOGIN_REFUSED.has(sqlState(err) ?? "")) throw err;
    throw new ConfigError([`DATABASE_URL: cannot connect: ${(err as Error).message}`]);
  }
}

// invalid_authorization_specification (no such role, no pg_hba entry), invalid_password, no such database.
const LOGIN_REFUSED = new Set(["28000", "28P01", "3D000"]);

async function prepare(options: ServiceDatabaseOptions): Promise<string> {
  let serviceUrl = options.url;
  const bootstrap = (adminUrl: string) =>
    bootstrapServiceDatabase({ adminUrl, serviceUrl, schema: options.schema, dir: options.dir });
  if (options.adminUrl) {
    await bootstrap(options.adminUrl);
  } else if (await canBootstrap(options.url)) {
    serviceUrl = roleUrl(options.url, serviceRoleName(options.schema));
    await bootstrap(options.url);
  } else {
    const pending = await pendingMigrations(options.url, options.schema, options.dir);
    if (pending.length > 0) {
      throw new ConfigError([
        `DATABASE_URL: the ${options.schema} schema is not bootstrapped (${pending.length} migrations pending, e.g. ${pending[0]}); ` +
          "run the service's bootstrap with FABRIC_DATABASE_ADMIN_URL set (or start it with that setting once)",
      ]);
    }
  }
  const { role, problems } = await privilegeProblems(serviceUrl, options.schema).catch((err: unknown) => {
    throw new ConfigError([
      `DATABASE_URL: cannot connect as the service's own role (${(err as Error).message}); ` +
        "a server that asks for passwords needs the role's URL in DATABASE_URL and the bootstrap URL in FABRIC_DATABASE_ADMIN_URL",
    ]);
  });
  if (problems.length > 0) {
    throw new ConfigError([
      `DATABASE_URL: the service must not run as "${role}", which ${problems.join(", ")}; ` +
        "give it its own unprivileged role (see README, Database roles)",
    ]);
  }
  return serviceUrl;
}
