import { createPublicKey, X509Certificate } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  buildCsr,
  generateP256KeyPair,
  inspectCertificate,
  saveIdentity,
  splitCertificates,
  verifyChain,
  type CertificateFacts,
  type TlsCredentials,
} from "@fabric/platform";
import { EnrollmentService, RenewRequestSchema } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { CliError } from "./cli-error.js";
import { EXIT } from "./exit-codes.js";
import type { Io } from "./io.js";
import type { LoadedIdentity, Session } from "./session.js";

const DAY_MS = 86_400_000;

/**
 * Runs before every command that uses the identity (DESIGN.md, Identity): under FABRIC_CLI_WARN_DAYS
 * (14) left it warns on stderr; under FABRIC_CLI_RENEW_DAYS (3) it renews through EnrollmentService.Renew
 * with a fresh key, authenticated by the current certificate, and says so; an expired identity cannot
 * renew (the server refuses it at the handshake), so it blocks with the re-onboarding command — except
 * for `report` commands (whoami), which must still show it.
 */
export async function checkIdentity(session: Session, use: "check" | "report", io: Io): Promise<void> {
  const { facts } = session.identity();
  const leftMs = facts.notAfter.getTime() - Date.now();
  const who = describeIdentity(facts);
  if (leftMs <= 0) {
    const expired = `your identity ${who} expired at ${facts.notAfter.toISOString()}`;
    const advice = `re-onboard: ${session.reonboardCommand()}`;
    if (use === "report") {
      io.err(`warning: ${expired}; ${advice}\n`);
      return;
    }
    throw new CliError(EXIT.refused, `${expired} and can no longer be renewed`, advice);
  }
  const { cliRenewDays, cliWarnDays } = session.settings;
  if (leftMs < cliRenewDays * DAY_MS) {
    try {
      const renewed = await renewIdentity(session);
      io.err(
        `renewed identity ${who}: new certificate ${renewed.facts.serialHex} valid until ` +
          `${renewed.facts.notAfter.toISOString()} (${daysLeft(renewed.facts)}), saved in ${renewed.dir}\n`,
      );
    } catch (err) {
      io.err(
        `warning: automatic renewal of ${who} failed: ${reason(err)}. It expires in ${daysLeft(facts)} ` +
          `(${facts.notAfter.toISOString()}); the next command tries again.\n`,
      );
    }
    return;
  }
  if (leftMs < cliWarnDays * DAY_MS) {
    io.err(
      `warning: your identity ${who} expires in ${daysLeft(facts)} (${facts.notAfter.toISOString()}); ` +
        `it is renewed automatically once fewer than ${cliRenewDays} days are left\n`,
    );
  }
}

/**
 * Renews the identity: a new P-256 key made here (it never leaves this machine), a CSR proving it, and
 * the certificate the enrollment service returns — saved only after checking it is for the same
 * principal, carries our new key and chains to the returned roots.
 */
async function renewIdentity(session: Session): Promise<LoadedIdentity> {
  const current = session.identity();
  const id = current.facts.identity?.id;
  if (!id) throw new Error("the certificate carries no Fabric identity to renew");
  const key = generateP256KeyPair();
  const res = await session
    .client(EnrollmentService, "enrollment")
    .renew(create(RenewRequestSchema, { csrPem: await buildCsr(key.privateKeyPem, id) }));
  const next: TlsCredentials = {
    privateKeyPem: key.privateKeyPem,
    certificatePem: res.certificatePem,
    chainPem: res.chainPem.flatMap(splitCertificates),
    caBundlePem: res.caBundlePem,
  };
  if (inspectCertificate(next.certificatePem).spiffeId !== current.facts.spiffeId) {
    throw new Error(
      "the enrollment service returned a certificate for another identity; kept the current one",
    );
  }
  const certKey = new X509Certificate(next.certificatePem).publicKey.export({ type: "spki", format: "der" });
  const ourKey = createPublicKey(key.privateKeyPem).export({ type: "spki", format: "der" });
  if (!certKey.equals(ourKey)) {
    throw new Error("the renewed certificate does not carry the new key; kept the current one");
  }
  if (!verifyChain(next.certificatePem, next.chainPem, next.caBundlePem)) {
    throw new Error("the renewed certificate does not chain to the returned CA bundle; kept the current one");
  }
  saveIdentity(current.dir, next);
  return session.reloadIdentity();
}

function describeIdentity(facts: CertificateFacts): string {
  return facts.identity ? `${facts.identity.kind} "${facts.identity.id}"` : `"${facts.subjectCommonName}"`;
}

/** Time left as days with one decimal: "9.8 days". */
export function daysLeft(facts: CertificateFacts, now = Date.now()): string {
  return `${((facts.notAfter.getTime() - now) / DAY_MS).toFixed(1)} days`;
}

function reason(err: unknown): string {
  if (err instanceof ConnectError) return `${Code[err.code]}: ${err.rawMessage}`;
  if (err instanceof CliError) return err.message;
  return (err as Error).message;
}
