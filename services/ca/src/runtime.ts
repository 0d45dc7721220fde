import { createPublicKey } from "node:crypto";
import {
  ConfigError,
  generateP256KeyPair,
  inspectCertificate,
  transaction,
  x509,
  type ServiceContext,
  type TlsCredentials,
} from "@fabric/platform";
import { openCa, type OpenedCa } from "./ca-directory.js";
import { recordOf } from "./certificate-record.js";
import { CrlPublisher } from "./crl.js";
import { insertCertificates } from "./inventory.js";
import { IssuanceLog, issuanceAudit } from "./issuance-log.js";
import { IssuanceRecorder } from "./issuance-recorder.js";
import { IssuanceWorkers } from "./issuance-workers.js";
import { WrongPassphraseError, resolvePassphrase } from "./key-custody.js";
import { LeafIssuer } from "./leaf-issuer.js";
import { validityFor, type LifetimePolicy } from "./lifetimes.js";
import { OcspResponder } from "./ocsp.js";
import { OfflineJournalReader } from "./offline-journal.js";
import { RevocationBroadcaster, readRevocations, toRevokedEntry } from "./revocation-log.js";
import { Revoker } from "./revoker.js";
import { lifetimePolicy, type CaConfig } from "./settings.js";
import { SigningAuthority } from "./signing-authority.js";

/** Everything the running CA is made of, built once per process from its settings. */
export interface CaRuntime {
  ca: OpenedCa;
  crlUrl: string;
  ocspUrl: string;
  lifetimes: LifetimePolicy;
  leaves: LeafIssuer;
  /** Sign's CSR verification and signing, off the main thread. */
  workers: IssuanceWorkers;
  /** Group commit of issued certificates and their audit events, written by `recorder`. */
  issuance: IssuanceLog;
  recorder: IssuanceRecorder;
  revoker: Revoker;
  broadcaster: RevocationBroadcaster;
  crl: CrlPublisher;
  ocsp: OcspResponder;
  /** Brings certificates issued offline since the last call into the inventory. */
  importOffline(): Promise<void>;
}

// The group commit writes one batch while the previous one waits for its commit (issuance-log.ts).
const ISSUANCE_BATCHES_IN_FLIGHT = 2;

// Built lazily and shared by the definition's build() and renew(), whichever the runtime calls first.
const runtimes = new WeakMap<object, Promise<CaRuntime>>();

export function caRuntime(ctx: ServiceContext<CaConfig>): Promise<CaRuntime> {
  let runtime = runtimes.get(ctx);
  if (!runtime) {
    runtime = createRuntime(ctx);
    runtimes.set(ctx, runtime);
  }
  return runtime;
}

/** The URLs certificates point at: settings, else the plain HTTP address. */
function revocationUrls(config: CaConfig): { crlUrl: string; ocspUrl: string } {
  const wildcard = ["0.0.0.0", "::", "[::]"].includes(config.host);
  if ((!config.crlUrl || !config.ocspUrl) && (wildcard || config.httpPort === 0)) {
    throw new ConfigError([
      `FABRIC_CRL_URL / FABRIC_OCSP_URL: certificates carry them, so set both when FABRIC_HOST is a wildcard or FABRIC_HTTP_PORT is 0`,
    ]);
  }
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  const base = `http://${host}:${config.httpPort}`;
  return { crlUrl: config.crlUrl ?? `${base}/crl`, ocspUrl: config.ocspUrl ?? `${base}/ocsp` };
}

async function openConfiguredCa(config: CaConfig): Promise<OpenedCa> {
  let passphrase: string;
  try {
    passphrase = resolvePassphrase({
      ...(config.caPassphrase ? { passphrase: config.caPassphrase } : {}),
      ...(config.caPassphraseFile ? { passphraseFile: config.caPassphraseFile } : {}),
    });
  } catch (err) {
    throw new ConfigError([(err as Error).message]);
  }
  let ca: OpenedCa;
  try {
    ca = await openCa(config.caDir, passphrase);
  } catch (err) {
    if (err instanceof WrongPassphraseError) {
      throw new ConfigError([
        `FABRIC_CA_PASSPHRASE${config.caPassphraseFile ? "_FILE" : ""}: ${err.message}; the CA cannot sign without its intermediate key. Give the passphrase used at \`fabric ca init\``,
      ]);
    }
    throw new ConfigError([`FABRIC_CA_DIR: ${(err as Error).message}`]);
  }
  if (ca.meta.trustDomain !== config.trustDomain) {
    throw new ConfigError([
      `FABRIC_TRUST_DOMAIN: is "${config.trustDomain}" but the CA in ${config.caDir} was created for "${ca.meta.trustDomain}"`,
    ]);
  }
  return ca;
}

async function createRuntime(ctx: ServiceContext<CaConfig>): Promise<CaRuntime> {
  const { config, pool, logger } = ctx;
  const lifetimes = lifetimePolicy(config);
  const urls = revocationUrls(config);
  const ca = await openConfiguredCa(config);
  const issuerOptions = { issuerCertificatePem: ca.intermediatePem, issuerKey: ca.intermediateKey, ...urls };
  const leaves = await LeafIssuer.create(issuerOptions);
  const workers = await IssuanceWorkers.start(config.issuanceWorkers, issuerOptions, leaves);
  const recorder = await IssuanceRecorder.start({
    databaseUrl: config.databaseUrl,
    schema: ctx.name,
    connections: ISSUANCE_BATCHES_IN_FLIGHT,
  });
  const authority = await SigningAuthority.create(ca.intermediatePem, ca.intermediateKey);
  const crl = new CrlPublisher(pool, authority, {
    refreshMs: config.crlRefreshMs,
    debounceMs: config.crlDebounceMs,
    logger,
  });
  const broadcaster = new RevocationBroadcaster();
  const revoker = new Revoker({
    pool,
    broadcaster,
    ownSet: ctx.revocations,
    lifetimes,
    issuerNotAfter: leaves.issuerNotAfter,
    onRevoked: () => crl.requestRebuild(),
  });
  const journal = new OfflineJournalReader(ca.dir);
  const importOffline = async () => {
    const { records, done } = journal.readNew();
    if (records.length === 0) return;
    await transaction(pool, async (tx) => {
      const inserted = await insertCertificates(tx, records);
      for (const r of records) {
        if (inserted.has(r.serial)) tx.audit(issuanceAudit(r, { id: "offline-issuance", kind: "operator" }));
      }
    });
    done();
  };

  // The CA's own revoked set (revocationSource "self") starts from the table.
  const { head, events } = await readRevocations(pool);
  ctx.revocations.replace(events.map(toRevokedEntry), head);
  revoker.load(events);
  await importOffline();
  await crl.rebuild();

  return {
    ca,
    ...urls,
    lifetimes,
    leaves,
    workers,
    issuance: new IssuanceLog(recorder.write, config.issuanceBatchMax, ISSUANCE_BATCHES_IN_FLIGHT),
    recorder,
    revoker,
    broadcaster,
    crl,
    ocsp: new OcspResponder(pool, authority, { validityMs: config.ocspValidityMs, logger, importOffline }),
    importOffline,
  };
}

/** DNS and IP SANs of the current certificate, carried over when the CA renews its own identity. */
function serverNames(certificatePem: string): { dnsNames: string[]; ipAddresses: string[] } {
  const san = new x509.X509Certificate(certificatePem).getExtension(x509.SubjectAlternativeNameExtension);
  const items = san?.names.items ?? [];
  return {
    dnsNames: items.filter((n) => n.type === "dns").map((n) => n.value),
    ipAddresses: items.filter((n) => n.type === "ip").map((n) => n.value),
  };
}

/**
 * The CA renews its own service identity locally (it cannot call itself before it has one): a fresh
 * key, signed by the intermediate on the hot path, recorded and audited like any issuance.
 */
export function renewOwnIdentity(ctx: ServiceContext<CaConfig>) {
  return async (current: TlsCredentials): Promise<TlsCredentials> => {
    const rt = await caRuntime(ctx);
    const key = generateP256KeyPair();
    const claims = { trustDomain: ctx.config.trustDomain, kind: "service" as const, id: "ca", grant: "ca" };
    const leaf = rt.leaves.issue({
      claims,
      spki: createPublicKey(key.publicKeyPem).export({ type: "spki", format: "der" }),
      ...validityFor("service", 0, {
        policy: rt.lifetimes,
        issuerNotAfter: rt.leaves.issuerNotAfter,
        startAfter: rt.revoker.cutoffFor("service", "ca"),
      }),
      ...serverNames(current.certificatePem),
    });
    const record = recordOf(
      leaf,
      claims,
      ["ca"],
      `renewal/${inspectCertificate(current.certificatePem).serialHex}`,
    );
    await rt.issuance.record(record, issuanceAudit(record, { id: "ca", kind: "service" }));
    return {
      privateKeyPem: key.privateKeyPem,
      certificatePem: leaf.pem,
      chainPem: [rt.ca.intermediatePem],
      caBundlePem: rt.ca.rootPem,
    };
  };
}
