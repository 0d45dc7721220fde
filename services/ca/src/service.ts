import { fileURLToPath } from "node:url";
import type { ServiceDefinition } from "@fabric/platform";
import { caService } from "./ca-rpc.js";
import { withPrefixRoute } from "./ocsp.js";
import { caRuntime, renewOwnIdentity } from "./runtime.js";
import { CA_SETTINGS } from "./settings.js";

/**
 * The CA service: Sign, Revoke, GetTrustBundle, ListCertificates, WatchRevocations on the mTLS port
 * (default 7400); /crl (DER) and /ocsp (RFC 6960, POST and GET /ocsp/<base64>) on the plain port
 * (default 7410). It is the source of revocations, so it feeds its own revoked set (revocationSource
 * "self"), and it renews its own identity locally with the intermediate instead of calling Sign.
 *
 * Settings, on top of every service's base settings (FABRIC_TRUST_DOMAIN, FABRIC_HOST, FABRIC_GRPC_PORT,
 * FABRIC_HTTP_PORT, DATABASE_URL, FABRIC_IDENTITY_DIR = <ca dir>/services/ca, FABRIC_LOG_LEVEL, ...):
 *
 *   FABRIC_CA_DIR                 required. The directory `initCa` wrote (ca.json, root.pem,
 *                                 intermediate.pem, intermediate.key.enc, ...). The root key is never
 *                                 read and may be moved offline.
 *   FABRIC_CA_PASSPHRASE          the passphrase the CA keys are encrypted under, or
 *   FABRIC_CA_PASSPHRASE_FILE     a file holding it (trailing newline ignored). Exactly one is needed;
 *                                 a wrong passphrase stops the process (exit 78) with a message naming
 *                                 the setting. FABRIC_TRUST_DOMAIN must match the CA's.
 *   FABRIC_CRL_URL                CRL distribution point written into certificates and returned by
 *                                 GetTrustBundle. Default http://<FABRIC_HOST>:<FABRIC_HTTP_PORT>/crl.
 *   FABRIC_OCSP_URL               OCSP responder URL likewise. Default http://<host>:<http port>/ocsp.
 *                                 Both must be set when FABRIC_HOST is a wildcard or the port is 0.
 *   FABRIC_CRL_REFRESH_MS         scheduled CRL rebuild period (default 1 h); nextUpdate = 2 × this.
 *   FABRIC_CRL_DEBOUNCE_MS        revocations within this window share one CRL rebuild (default 200).
 *   FABRIC_OCSP_VALIDITY_MS       nextUpdate of OCSP answers (default 1 h).
 *   FABRIC_NODE_DEFAULT_LIFETIME_MS, FABRIC_NODE_MAX_LIFETIME_MS     node certificates (30 d, 90 d)
 *   FABRIC_USER_DEFAULT_LIFETIME_MS, FABRIC_USER_MAX_LIFETIME_MS     developer certificates (30 d, 90 d)
 *   FABRIC_ADMIN_DEFAULT_LIFETIME_MS, FABRIC_ADMIN_MAX_LIFETIME_MS   admin certificates (30 d, 90 d)
 *   FABRIC_SERVICE_LIFETIME_MS    service certificates, default and cap (24 h), the CA's own included;
 *                                 short values exercise renewal in tests.
 *   FABRIC_ISSUANCE_BATCH_MAX     most certificates recorded per group-commit transaction (default 1000).
 *                                 The CA commits them on a thread of its own, over 2 database
 *                                 connections besides FABRIC_DB_POOL_SIZE.
 *   FABRIC_ISSUANCE_WORKERS       worker threads verifying CSRs and signing (default: cores - 1;
 *                                 0 = on the main thread).
 */
export const caDefinition: ServiceDefinition<typeof CA_SETTINGS> = {
  name: "ca",
  defaults: { grpcPort: 7400, httpPort: 7410 },
  settings: CA_SETTINGS,
  migrationsDir: fileURLToPath(new URL("../migrations", import.meta.url)),
  revocationSource: "self",
  renew: renewOwnIdentity,
  async build(ctx) {
    const rt = await caRuntime(ctx);
    return {
      services: [
        caService(rt, {
          pool: ctx.pool,
          logger: ctx.logger,
          trustDomain: ctx.config.trustDomain,
          audit: ctx.audit,
        }),
      ],
      httpRoutes: withPrefixRoute({ "/crl": rt.crl.route, "/ocsp": rt.ocsp.route }, "/ocsp/", rt.ocsp.route),
      start() {
        rt.crl.start();
      },
      async stop() {
        await rt.crl.stop();
        await rt.issuance.drain();
        await Promise.all([rt.recorder.close(), rt.workers.close()]);
      },
    };
  },
};
