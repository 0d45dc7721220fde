import { createPublicKey, X509Certificate } from "node:crypto";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  buildCsr,
  buildSpiffeId,
  createBootstrapClient,
  fingerprintSha256,
  fromPem,
  generateP256KeyPair,
  inspectCertificate,
  isValidTrustDomain,
  saveIdentity,
  splitCertificates,
  verifyChain,
  type TlsCredentials,
} from "@fabric/platform";
import {
  EnrollmentService,
  type BootstrapDeveloperResponse,
} from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import type { Command } from "../command.js";
import { CliError, usageError } from "../cli-error.js";
import type { ContextConfig } from "../config-file.js";
import { EXIT } from "../exit-codes.js";
import { formatKeyValues } from "../output.js";
import { clusterFlag, textFlag } from "./flag-values.js";
import type { CommandModule } from "./module.js";

const DEVELOPER_ID = /^[a-z0-9][a-z0-9-]{0,63}$/;

/** `fabric dev pin` (admins) and `fabric dev init` (developers): onboarding a developer with a PIN. */
export const devCommands: CommandModule = () => {
  const pin: Command = {
    path: ["dev", "pin"],
    summary: "Issues a one-time PIN a developer onboards with (`fabric dev init`).",
    help:
      "Issues a 6-digit PIN for a developer id: valid 24 hours, single use, locked after 5 wrong attempts, " +
      "replacing any earlier unused PIN of that developer. It is shown once: hand it to the developer over " +
      "a separate channel, together with the command it prints (which pins this Fabric's root CA " +
      "fingerprint, so their CLI can tell the real server from an impostor).",
    flags: [
      {
        name: "org",
        type: "string",
        valueName: "<id>",
        help: "Organization the developer belongs to (written into their certificate). Org-admins: their own.",
      },
      clusterFlag("Cluster the developer's CLI uses by default."),
    ],
    args: [{ name: "developer-id", help: "1-64 characters of [a-z0-9-], e.g. 01 or mika." }],
    identity: "check",
    server: "enrollment",
    async run({ session, args, flags, output }) {
      const developerId = args[0]!;
      const res = await session.client(EnrollmentService, "enrollment").issueDeveloperPin({
        developerId,
        organizationId: textFlag(flags, "org") ?? "",
        defaultClusterId: textFlag(flags, "cluster") ?? "",
      });
      const fingerprint = rootFingerprints(session.identity().credentials.caBundlePem)[0] ?? "";
      const server = session.serviceUrl("enrollment") ?? "<enrollment url>";
      const command =
        `fabric dev init --dev-id ${developerId} --server ${server} --pin ${res.pin}` +
        (fingerprint ? ` --ca-fingerprint ${fingerprint}` : "");
      const expiresAt = res.expiresAt ? new Date(Number(res.expiresAt.seconds) * 1000).toISOString() : "";
      output.print(
        { developerId, pin: res.pin, expiresAt, caFingerprintSha256: fingerprint, command },
        () =>
          formatKeyValues([
            ["developer", developerId],
            ["pin", res.pin],
            ["expires", expiresAt],
          ]) +
          "\nThe PIN is shown only this once and works once. Give the developer, over a separate channel:\n" +
          `  ${command}\n`,
      );
    },
  };

  const init: Command = {
    path: ["dev", "init"],
    summary: "Onboards this machine as a developer: a key, a certificate and a context, from a PIN.",
    help:
      "Generates a key (it never leaves this machine) and exchanges a CSR and the PIN from your admin for " +
      "your developer certificate. This CLI does not know the Fabric's CA yet, so it talks to --server " +
      "without checking its certificate; it then trusts what it received only if the returned CA bundle " +
      "carries the MAC keyed by your PIN, the server's certificate chains to that bundle, the bundle holds " +
      "the root --ca-fingerprint names (when given), and the certificate is yours; otherwise it refuses " +
      "and saves nothing. The identity goes to $FABRIC_HOME/certs/<dev-id>/ and a context (named after " +
      "the trust domain, or --context) becomes the CLI's current one. Run it again with a new PIN to " +
      "re-onboard after your identity expired or was revoked. The PIN may also come from FABRIC_DEV_PIN.",
    flags: [
      {
        name: "dev-id",
        type: "string",
        valueName: "<id>",
        help: "Your developer id, as your admin issued the PIN for. Required.",
      },
      {
        name: "pin",
        type: "string",
        valueName: "<pin>",
        help: "The 6-digit PIN from your admin (or FABRIC_DEV_PIN, which keeps it out of the process list).",
      },
      {
        name: "ca-fingerprint",
        type: "string",
        valueName: "<sha256>",
        help: "SHA-256 of the Fabric root certificate, as `fabric dev pin` printed it: the bundle must contain that root.",
      },
    ],
    identity: "none",
    server: "enrollment",
    async run({ session, flags, output, io }) {
      const developerId = textFlag(flags, "dev-id");
      if (!developerId)
        throw usageError("--dev-id is required: the developer id your admin issued the PIN for");
      if (!DEVELOPER_ID.test(developerId)) {
        throw usageError("--dev-id must be 1-64 characters of [a-z0-9-], starting with a letter or digit");
      }
      const pinValue = textFlag(flags, "pin") ?? io.env.FABRIC_DEV_PIN;
      if (!pinValue) throw usageError("--pin (or FABRIC_DEV_PIN) is required: the PIN your admin gave you");
      if (!/^\d{6}$/.test(pinValue)) throw usageError("the PIN is 6 digits; check what your admin gave you");
      const pinnedRoot = fingerprintFlag(textFlag(flags, "ca-fingerprint"));
      const server = session.serviceUrl("enrollment");
      if (!server) throw usageError("--server is required: the enrollment service URL your admin gave you");

      const key = generateP256KeyPair();
      const { client, presentedChains } = createBootstrapClient(EnrollmentService, {
        url: server,
        ...(session.options.timeoutMs ? { timeoutMs: session.options.timeoutMs } : {}),
      });
      let res: BootstrapDeveloperResponse;
      try {
        res = await client.bootstrapDeveloper({
          developerId,
          pin: pinValue,
          csrPem: await buildCsr(key.privateKeyPem, developerId),
        });
      } catch (err) {
        throw bootstrapFailure(err, server, developerId);
      }
      // The enrollment package holds the MAC's exact derivation; only this command needs it.
      const { verifyDeveloperBundleMac } = await import("@fabric/enrollment");
      const identity = authenticate(res, {
        verifyMac: verifyDeveloperBundleMac,
        server,
        developerId,
        pin: pinValue,
        pinnedRoot,
        presented: presentedChains(),
        privateKeyPem: key.privateKeyPem,
      });
      if (!pinnedRoot) {
        // The PIN went to a server not yet verified: an impostor speaking the protocol could have made
        // the MAC. Only the root's fingerprint, compared out of band, rules that out.
        io.err(
          `warning: no --ca-fingerprint given, so the server was checked against your PIN only; compare the ` +
            `root fingerprint ${rootFingerprints(identity.caBundlePem).join(", ")} with your admin\n`,
        );
      }
      const trustDomain = res.settings!.trustDomain;
      const dir = join(session.home, "certs", developerId);
      saveIdentity(dir, identity);
      const contextName = session.options.context ?? trustDomain;
      const config = session.config();
      config.setContext(contextName, developerContext(res, server, developerId));
      config.use(contextName);

      const facts = inspectCertificate(identity.certificatePem);
      const doc = {
        developerId,
        identityDir: dir,
        spiffeId: facts.spiffeId ?? "",
        organization: facts.organization ?? "",
        serial: facts.serialHex,
        notAfter: facts.notAfter.toISOString(),
        context: contextName,
        trustDomain,
        caFingerprintsSha256: rootFingerprints(identity.caBundlePem),
      };
      output.print(
        doc,
        () =>
          `onboarded developer ${developerId}: identity saved in ${dir}; context "${contextName}" is now current\n` +
          formatKeyValues([
            ["spiffe id", doc.spiffeId],
            ["valid until", doc.notAfter],
            ["ca fingerprint", doc.caFingerprintsSha256.join(", ")],
          ]) +
          "It renews itself when fewer than 3 days are left; `fabric whoami` shows it.\n",
      );
    },
  };

  return {
    groups: [
      {
        path: ["dev"],
        summary: "Developer onboarding: PINs (admins) and `dev init` (developers).",
        help:
          "An admin issues a one-time PIN for a developer id (`fabric dev pin`); the developer exchanges it " +
          "for a certificate whose key never leaves their machine (`fabric dev init`). Later renewals use " +
          "the certificate itself, never the PIN.",
        section: "commands",
      },
    ],
    commands: [pin, init],
  };
};

type MacCheck = (pin: string, developerId: string, caBundlePem: string, mac: Uint8Array) => boolean;

/**
 * Everything a bootstrap response must prove before any of it is trusted or saved. Each refusal is
 * loud: it may mean someone is between this machine and the Fabric.
 */
function authenticate(
  res: BootstrapDeveloperResponse,
  ctx: {
    server: string;
    developerId: string;
    pin: string;
    pinnedRoot: string | undefined;
    presented: string[][];
    privateKeyPem: string;
    verifyMac: MacCheck;
  },
): TlsCredentials {
  const refuse = (problem: string) =>
    new CliError(
      EXIT.unavailable,
      `REFUSED: ${problem}. Nothing was saved`,
      `the server at ${ctx.server} may not be the Fabric your admin runs, or the connection is being ` +
        "intercepted: check the URL with your admin and ask for a new PIN",
    );
  if (!ctx.verifyMac(ctx.pin, ctx.developerId, res.caBundlePem, res.caBundleMac)) {
    throw refuse("the CA bundle the server returned does not carry the MAC keyed by your PIN");
  }
  const bundle = res.caBundlePem;
  const roots = rootFingerprints(bundle);
  if (roots.length === 0) throw refuse("the server returned no CA certificate");
  if (ctx.pinnedRoot && !roots.includes(ctx.pinnedRoot)) {
    throw refuse(
      `the CA bundle does not contain the root --ca-fingerprint names (it holds ${roots.join(", ")})`,
    );
  }
  const trustDomain = res.settings?.trustDomain ?? "";
  if (!isValidTrustDomain(trustDomain)) throw refuse("the server sent no valid trust domain");
  const enrollmentId = buildSpiffeId({ trustDomain, kind: "service", id: "enrollment" });
  if (ctx.presented.length === 0) throw refuse("no server certificate was seen on the connection");
  for (const [leaf, ...intermediates] of ctx.presented) {
    if (!leaf || !verifyChain(leaf, intermediates, bundle)) {
      throw refuse("the server's certificate does not chain to the CA bundle it returned");
    }
    if (inspectCertificate(leaf).spiffeId !== enrollmentId) {
      throw refuse(`the server is not ${enrollmentId}`);
    }
  }
  const identity: TlsCredentials = {
    privateKeyPem: ctx.privateKeyPem,
    certificatePem: res.certificatePem,
    chainPem: res.chainPem.flatMap(splitCertificates),
    caBundlePem: bundle,
  };
  if (!verifyChain(identity.certificatePem, identity.chainPem, bundle)) {
    throw refuse("the certificate returned does not chain to the CA bundle");
  }
  const expectedId = buildSpiffeId({ trustDomain, kind: "user", id: ctx.developerId });
  if (inspectCertificate(identity.certificatePem).spiffeId !== expectedId) {
    throw refuse(`the certificate returned is not for ${expectedId}`);
  }
  const certKey = new X509Certificate(identity.certificatePem).publicKey.export({
    type: "spki",
    format: "der",
  });
  const ourKey = createPublicKey(ctx.privateKeyPem).export({ type: "spki", format: "der" });
  if (!certKey.equals(ourKey)) throw refuse("the certificate returned does not carry the key made here");
  return identity;
}

/** The context a developer's CLI uses: the endpoints the server announced, the new identity. */
function developerContext(
  res: BootstrapDeveloperResponse,
  server: string,
  developerId: string,
): ContextConfig {
  const s = res.settings!;
  const announced: Record<string, string> = {
    ca: s.caEndpoint,
    enrollment: s.enrollmentEndpoint || server,
    registry: s.registryEndpoint,
    router: s.routerEndpoint,
  };
  const servers = Object.fromEntries(
    Object.entries(announced).filter(([, url]) => url.startsWith("https://")),
  );
  return { "trust-domain": s.trustDomain, identity: developerId, servers };
}

function rootFingerprints(bundlePem: string): string[] {
  return splitCertificates(bundlePem).map((pem) => fingerprintSha256(fromPem(pem, "CERTIFICATE")));
}

function fingerprintFlag(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  const hex = text
    .replace(/^sha256:/i, "")
    .replace(/[:\s]/g, "")
    .toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) throw usageError("--ca-fingerprint must be a SHA-256: 64 hex digits");
  return hex;
}

/** Failures of the bootstrap call itself, with advice for a developer rather than an identity holder. */
function bootstrapFailure(err: unknown, server: string, developerId: string): unknown {
  if (!(err instanceof ConnectError)) return err;
  const message = `${Code[err.code]}: ${err.rawMessage}`;
  switch (err.code) {
    case Code.Unauthenticated:
      return new CliError(
        EXIT.refused,
        message,
        `check --dev-id ${developerId} and the PIN your admin gave you; wrong attempts count towards a lockout`,
      );
    case Code.FailedPrecondition:
    case Code.ResourceExhausted:
      return new CliError(
        err.code === Code.FailedPrecondition ? EXIT.precondition : EXIT.exhausted,
        message,
        `ask your admin for a new PIN (\`fabric dev pin ${developerId}\`)`,
      );
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return new CliError(
        EXIT.unavailable,
        message,
        `is the enrollment service running at ${server}? Check the URL`,
      );
    default:
      return new CliError(EXIT.failure, message, "the enrollment service failed; its log has the details");
  }
}
