import { resolve } from "node:path";
import type { Command } from "../command.js";
import { CliError } from "../cli-error.js";
import { EXIT } from "../exit-codes.js";
import { DEFAULT_TRUST_DOMAIN, localPaths } from "../local-fabric.js";
import { formatKeyValues } from "../output.js";
import { textFlag } from "./flag-values.js";
import type { CommandModule } from "./module.js";

const DIR_FLAG = {
  name: "dir",
  type: "string",
  valueName: "<dir>",
  help: "The CA directory (default $FABRIC_HOME/ca); the CA service's FABRIC_CA_DIR.",
} as const;

/**
 * `fabric ca init|status`: the CA directory on this machine (the generated `fabric ca <rpc>` commands
 * talk to the running CA service instead). They join the `ca` group of the generated layer.
 */
export const caLocalCommands: CommandModule = () => {
  const init: Command = {
    path: ["ca", "init"],
    summary: "Creates a CA directory: root, intermediate and the four service identities.",
    help:
      "Creates an ECDSA P-256 root (10 years) and intermediate (1 year) with both keys encrypted under the " +
      "passphrase — FABRIC_CA_PASSPHRASE, or the file FABRIC_CA_PASSPHRASE_FILE names, else one generated " +
      "and stored 0600 in $FABRIC_HOME/ca-passphrase — and the identities of the ca, enrollment, registry " +
      "and router services (24 h; `fabric up` and --exist-ok refresh them). Prints both fingerprints: " +
      "compare them out of band wherever the root is installed. Refuses to overwrite an existing CA " +
      "unless --exist-ok, which keeps it, checks the passphrase and refreshes stale service identities. " +
      "`fabric up` does all of this itself.",
    flags: [
      DIR_FLAG,
      {
        name: "trust-domain",
        type: "string",
        valueName: "<td>",
        help: `Trust domain of the new CA (default ${DEFAULT_TRUST_DOMAIN}): identities are spiffe://<td>/...`,
      },
      {
        name: "crl-url",
        type: "string",
        valueName: "<url>",
        help: "CRL URL written into certificates issued offline (default http://127.0.0.1:7410/crl).",
      },
      {
        name: "ocsp-url",
        type: "string",
        valueName: "<url>",
        help: "OCSP URL written into certificates issued offline (default http://127.0.0.1:7410/ocsp).",
      },
      { name: "exist-ok", type: "boolean", help: "Keep an existing CA instead of refusing." },
    ],
    identity: "none",
    async run({ session, flags, io, output }) {
      const { openOrCreateCa, refreshServiceIdentities } = await import("../up/local-ca.js");
      const paths = localPaths(session.home);
      const dir = resolve(textFlag(flags, "dir") ?? paths.caDir);
      const trustDomain = textFlag(flags, "trust-domain");
      const ca = await openOrCreateCa(paths, {
        dir,
        env: io.env,
        ...(trustDomain ? { trustDomain } : {}),
        crlUrl: textFlag(flags, "crl-url") ?? "http://127.0.0.1:7410/crl",
        ocspUrl: textFlag(flags, "ocsp-url") ?? "http://127.0.0.1:7410/ocsp",
        mayExist: flags["exist-ok"] === true,
      });
      const refreshed = ca.created ? [] : refreshServiceIdentities(ca);
      const s = ca.status;
      const doc = {
        dir,
        created: ca.created,
        trustDomain: s.trustDomain,
        rootFingerprintSha256: s.root.fingerprintSha256,
        rootNotAfter: s.root.notAfter.toISOString(),
        intermediateFingerprintSha256: s.intermediate.fingerprintSha256,
        intermediateNotAfter: s.intermediate.notAfter.toISOString(),
        rootCertificate: ca.rootPemPath,
        passphrase: ca.passphrase.source === "generated" ? paths.passphraseFile : ca.passphrase.source,
        refreshedServiceIdentities: refreshed,
      };
      output.print(
        doc,
        () =>
          `${ca.created ? "created" : "kept"} the CA in ${dir}\n` +
          formatKeyValues([
            ["trust domain", doc.trustDomain],
            ["root sha256", doc.rootFingerprintSha256],
            ["root expires", doc.rootNotAfter],
            ["intermediate sha256", doc.intermediateFingerprintSha256],
            ["intermediate expires", doc.intermediateNotAfter],
            ["root certificate", doc.rootCertificate],
            [
              "passphrase",
              ca.passphrase.source === "generated"
                ? `stored in ${doc.passphrase} (0600)`
                : `from ${doc.passphrase}`,
            ],
            ...(refreshed.length ? [["refreshed", refreshed.join(", ")] as [string, string]] : []),
          ]) +
          "Compare the root fingerprint out of band wherever the root certificate is installed.\n",
      );
    },
  };

  const status: Command = {
    path: ["ca", "status"],
    summary: "Shows the CA directory: fingerprints, expiries, root key location, issued/revoked counts.",
    help:
      "Shows the local CA: trust domain, root and intermediate fingerprints and expiries, whether the root " +
      "key is still here (it may be moved offline: the running CA never reads it), and the path of the " +
      "root certificate nodes enroll with (`fabric-agent enroll --ca-bundle`). With a database — the one " +
      "a running `fabric up` uses, else DATABASE_URL — also the inventory's issued, revoked and " +
      "active certificate counts.",
    flags: [DIR_FLAG],
    identity: "none",
    async run({ session, flags, io, output }) {
      const [{ caExists, caStatus }, { runningUp }] = await Promise.all([
        import("@fabric/ca"),
        import("../up/up-state.js"),
      ]);
      const paths = localPaths(session.home);
      const dir = resolve(textFlag(flags, "dir") ?? paths.caDir);
      if (!caExists(dir)) {
        throw new CliError(
          EXIT.notFound,
          `${dir} holds no Fabric CA`,
          "create one with `fabric ca init` (or `fabric up`), or point --dir at the CA directory",
        );
      }
      // The database of a `fabric up` running on this home is the most specific answer.
      const databaseUrl = runningUp(paths)?.databaseUrl ?? io.env.DATABASE_URL;
      const s = await caStatus({ caDir: dir, ...(databaseUrl ? { databaseUrl } : {}) });
      const doc = {
        dir,
        trustDomain: s.trustDomain,
        rootCertificate: resolve(dir, "root.pem"),
        root: {
          ...s.root,
          notBefore: s.root.notBefore.toISOString(),
          notAfter: s.root.notAfter.toISOString(),
        },
        intermediate: {
          ...s.intermediate,
          notBefore: s.intermediate.notBefore.toISOString(),
          notAfter: s.intermediate.notAfter.toISOString(),
        },
        counts: s.counts ?? null,
      };
      output.print(doc, () =>
        formatKeyValues([
          ["directory", dir],
          ["trust domain", s.trustDomain],
          ["root", `${s.root.subject}, SHA-256 ${s.root.fingerprintSha256}`],
          ["root valid", `${doc.root.notBefore} to ${doc.root.notAfter}`],
          ["root key", s.root.keyPresent ? "present (encrypted)" : "not here (offline)"],
          ["root certificate", doc.rootCertificate],
          ["intermediate", `${s.intermediate.subject}, SHA-256 ${s.intermediate.fingerprintSha256}`],
          ["intermediate valid", `${doc.intermediate.notBefore} to ${doc.intermediate.notAfter}`],
          [
            "certificates",
            s.counts
              ? `${s.counts.issued} issued, ${s.counts.revoked} revoked, ${s.counts.active} active`
              : "(no database: set DATABASE_URL, or run `fabric up`)",
          ],
        ]),
      );
    },
  };

  return { commands: [init, status] };
};
