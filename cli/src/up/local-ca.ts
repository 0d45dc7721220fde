import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  MIN_PASSPHRASE_LENGTH,
  OfflineIssuer,
  caExists,
  caStatus,
  initCa,
  serviceIdentityDir,
  type CaStatus,
} from "@fabric/ca";
import {
  SERVICE_NAMES,
  identityExists,
  loadIdentity,
  renewalDelayMs,
  saveIdentity,
  verifyChain,
  writeFileAtomic,
  type ServiceName,
} from "@fabric/platform";
import { CliError, usageError } from "../cli-error.js";
import { EXIT } from "../exit-codes.js";
import { DEFAULT_TRUST_DOMAIN, LOCAL_ADMIN_ID, type LocalPaths } from "../local-fabric.js";

/** Where the CA passphrase came from; the CA process is handed the same source. */
export interface CaPassphrase {
  value: string;
  /** The CA service setting that hands it over: the passphrase itself, or the file holding it. */
  setting: { key: "caPassphrase" | "caPassphraseFile"; value: string };
  source: "FABRIC_CA_PASSPHRASE" | "FABRIC_CA_PASSPHRASE_FILE" | "stored" | "generated";
}

/**
 * The passphrase of the CA keys: FABRIC_CA_PASSPHRASE, else the file FABRIC_CA_PASSPHRASE_FILE names
 * (the CA service's own settings), else $FABRIC_HOME/ca-passphrase; for a new CA with none of these, a
 * random one is generated and stored there (0600). Never printed, never logged.
 */
export function caPassphrase(paths: LocalPaths, env: NodeJS.ProcessEnv, mayGenerate: boolean): CaPassphrase {
  if (env.FABRIC_CA_PASSPHRASE) {
    return {
      value: env.FABRIC_CA_PASSPHRASE,
      setting: { key: "caPassphrase", value: env.FABRIC_CA_PASSPHRASE },
      source: "FABRIC_CA_PASSPHRASE",
    };
  }
  const file =
    env.FABRIC_CA_PASSPHRASE_FILE || (existsSync(paths.passphraseFile) ? paths.passphraseFile : "");
  if (file) {
    let value: string;
    try {
      value = readFileSync(file, "utf8").replace(/\r?\n$/, "");
    } catch (err) {
      throw usageError(`cannot read the CA passphrase file ${file}: ${(err as NodeJS.ErrnoException).code}`);
    }
    return {
      value,
      setting: { key: "caPassphraseFile", value: file },
      source: env.FABRIC_CA_PASSPHRASE_FILE ? "FABRIC_CA_PASSPHRASE_FILE" : "stored",
    };
  }
  if (!mayGenerate) {
    throw usageError(
      "the CA keys are encrypted and no passphrase was found",
      `set FABRIC_CA_PASSPHRASE (or FABRIC_CA_PASSPHRASE_FILE), or restore ${paths.passphraseFile}`,
    );
  }
  const value = randomBytes(24).toString("base64url");
  mkdirSync(paths.home, { recursive: true, mode: 0o700 });
  writeFileAtomic(paths.passphraseFile, `${value}\n`, 0o600);
  return { value, setting: { key: "caPassphraseFile", value: paths.passphraseFile }, source: "generated" };
}

export interface LocalCa {
  dir: string;
  created: boolean;
  passphrase: CaPassphrase;
  status: CaStatus;
  issuer: OfflineIssuer;
  rootPem: string;
  rootPemPath: string;
}

/**
 * The CA in `dir`: created when there is none (root and intermediate, keys encrypted under the
 * passphrase, the four service identities), otherwise opened — which proves the passphrase.
 */
export async function openOrCreateCa(
  paths: LocalPaths,
  options: {
    dir: string;
    env: NodeJS.ProcessEnv;
    trustDomain?: string;
    /** Written into certificates issued offline; the running CA has its own settings. */
    crlUrl: string;
    ocspUrl: string;
    /** false: refuse when a CA exists already (`fabric ca init` without --exist-ok). */
    mayExist: boolean;
  },
): Promise<LocalCa> {
  const exists = caExists(options.dir);
  if (exists && !options.mayExist) {
    throw new CliError(
      EXIT.precondition,
      `${options.dir} already holds a CA; refusing to overwrite it`,
      "`fabric ca status` shows it; pass --exist-ok to keep it and refresh the service identities",
    );
  }
  const passphrase = caPassphrase(paths, options.env, !exists);
  if (!exists) {
    if (passphrase.value.length < MIN_PASSPHRASE_LENGTH) {
      throw usageError(`the CA passphrase must be at least ${MIN_PASSPHRASE_LENGTH} characters`);
    }
    try {
      await initCa({
        dir: options.dir,
        trustDomain: options.trustDomain ?? DEFAULT_TRUST_DOMAIN,
        passphrase: passphrase.value,
        crlUrl: options.crlUrl,
        ocspUrl: options.ocspUrl,
      });
    } catch (err) {
      throw usageError(`cannot create the CA: ${(err as Error).message}`);
    }
  }
  const status = await caStatus({ caDir: options.dir });
  if (options.trustDomain && options.trustDomain !== status.trustDomain) {
    throw usageError(
      `the CA in ${options.dir} belongs to trust domain "${status.trustDomain}", not "${options.trustDomain}"`,
      "drop --trust-domain to use it, or point FABRIC_HOME (or --dir) elsewhere for a new Fabric",
    );
  }
  let issuer: OfflineIssuer;
  try {
    issuer = await OfflineIssuer.open({ caDir: options.dir, passphrase: passphrase.value });
  } catch (err) {
    throw new CliError(
      EXIT.refused,
      `cannot open the CA keys: ${(err as Error).message}`,
      `the passphrase from ${passphrase.source === "stored" ? paths.passphraseFile : passphrase.source} is not the one the CA was created with`,
    );
  }
  const rootPemPath = join(options.dir, "root.pem");
  return {
    dir: options.dir,
    created: !exists,
    passphrase,
    status,
    issuer,
    rootPem: readFileSync(rootPemPath, "utf8"),
    rootPemPath,
  };
}

/**
 * Re-issues the four service identities when one is missing, past the point where it would have
 * renewed itself (services renew at two thirds of their 24 hours while running, not while stopped), or
 * no longer chains to this CA. Returns the services whose identity was stale.
 */
export function refreshServiceIdentities(ca: LocalCa): ServiceName[] {
  const stale = SERVICE_NAMES.filter((name) => !usable(serviceIdentityDir(ca.dir, name), ca.rootPem));
  if (stale.length > 0) ca.issuer.writeServiceIdentities();
  return stale;
}

/**
 * The platform-admin identity of this machine, in certs/platform-admin/: issued offline with the CA's
 * intermediate (holding the passphrase is the authorization) when missing, past two thirds of its
 * lifetime, or from another CA.
 */
export function ensureAdminIdentity(ca: LocalCa, certsDir: string): { dir: string; issued: boolean } {
  const dir = join(certsDir, LOCAL_ADMIN_ID);
  if (usable(dir, ca.rootPem)) return { dir, issued: false };
  saveIdentity(
    dir,
    ca.issuer.issue(
      { kind: "admin", id: LOCAL_ADMIN_ID, grant: "platform-admin" },
      { authorizationRef: `fabric-up/admin/${LOCAL_ADMIN_ID}` },
    ),
  );
  return { dir, issued: true };
}

function usable(dir: string, rootPem: string): boolean {
  if (!identityExists(dir)) return false;
  try {
    const id = loadIdentity(dir);
    return (
      renewalDelayMs(id.certificatePem, Date.now(), () => 0) > 0 &&
      verifyChain(id.certificatePem, id.chainPem, rootPem)
    );
  } catch {
    return false;
  }
}
