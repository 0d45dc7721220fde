import { join } from "node:path";

/**
 * What `fabric up` and `fabric ca init` keep under $FABRIC_HOME, next to the CLI's own config.yaml and
 * certs/<id>/:
 *
 *   ca/                   the CA directory (root and intermediate, keys encrypted, services/<name>/
 *                         identities); FABRIC_CA_DIR of the CA service
 *   ca-passphrase         the generated passphrase of the CA keys (0600), unless FABRIC_CA_PASSPHRASE
 *                         is given instead
 *   dev/postgres/         the embedded Postgres data directory (when DATABASE_URL is not set)
 *   dev/postgres-password the embedded Postgres superuser password (0600)
 *   dev/logs/<name>.log   output of each service process and of Postgres
 *   dev/up.json           while `fabric up` runs: its pid, endpoints and database URL (0600)
 */
export function localPaths(home: string) {
  const dev = join(home, "dev");
  return {
    home,
    caDir: join(home, "ca"),
    passphraseFile: join(home, "ca-passphrase"),
    certsDir: join(home, "certs"),
    dev,
    postgresDir: join(dev, "postgres"),
    postgresPasswordFile: join(dev, "postgres-password"),
    logsDir: join(dev, "logs"),
    upState: join(dev, "up.json"),
  };
}

export type LocalPaths = ReturnType<typeof localPaths>;

/** The cluster `fabric up` creates on first start; workflow commands use it when --cluster is not given. */
export const DEFAULT_CLUSTER_ID = "default";

/** The platform-admin identity `fabric up` writes, under certs/<id>/. */
export const LOCAL_ADMIN_ID = "platform-admin";

/** The context `fabric up` writes and makes current. */
export const LOCAL_CONTEXT = "local";

/** The trust domain of a CA `fabric up` or `fabric ca init` creates unless told otherwise. */
export const DEFAULT_TRUST_DOMAIN = "fabric.local";

/** The embedded Postgres listens here (plus --port-offset), next to the services' 7400-7413. */
export const DEFAULT_POSTGRES_PORT = 7420;
