import { createPublicKey } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import {
  buildCsr,
  generateP256KeyPair,
  inspectCertificate,
  renewalDelayMs,
  splitCertificates,
  verifyChain,
  type Logger,
  type TlsCredentials,
} from "@fabric/platform";
import {
  RenewRequestSchema,
  type EnrollmentService,
} from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { Backoff, sleep } from "./backoff.js";
import type { IdentityHolder } from "./identity.js";

export interface RenewalOptions {
  identity: IdentityHolder;
  enrollment: Client<typeof EnrollmentService>;
  logger: Logger;
  signal: AbortSignal;
  /** The control plane no longer accepts this identity (revoked): the agent must re-enroll now. */
  onFatal(err: ConnectError): void;
  /**
   * Renewal refused for good while the certificate is still valid (e.g. the maximum enrollment age is
   * reached): no more attempts; the node runs until the certificate expires and must re-enroll by then.
   */
  onRefused(err: ConnectError): void;
}

/**
 * Renews the node certificate at two thirds of its lifetime, with jitter (the platform's schedule), through
 * EnrollmentService.Renew over mTLS with the current certificate. Every renewal uses a fresh key, made
 * here and never sent. Transient failures retry with exponential backoff and full jitter until the
 * certificate expires (the agent's expiry watch takes over then).
 */
export class Renewal {
  private wake = new AbortController();
  private inFlight: Promise<void> | undefined;
  readonly done: Promise<void>;

  constructor(private readonly options: RenewalOptions) {
    this.done = this.loop();
  }

  /** Renews now (RENEW_NOW directive); resolves when the attempt has finished, successful or not. */
  renewNow(): Promise<void> {
    this.wake.abort();
    // The loop, woken above, shares this attempt (renewOnce) and logs and handles its failure; the
    // directive only waits for it to end.
    return (this.inFlight ?? this.renewOnce()).then(
      () => undefined,
      () => undefined,
    );
  }

  private async loop(): Promise<void> {
    const { signal, logger, identity } = this.options;
    const backoff = new Backoff(1_000, 60_000);
    let failing = false;
    while (!signal.aborted) {
      this.wake = new AbortController();
      const due = renewalDelayMs(identity.current().certificatePem);
      // Retries back off, but never past a quarter of the remaining lifetime: near expiry they get denser.
      const remaining = identity.facts().notAfter.getTime() - Date.now();
      const wait = failing ? Math.min(backoff.next(), Math.max(1_000, remaining / 4)) : due;
      // setTimeout caps at ~24.8 days; longer waits wake early and are planned again.
      await sleep(Math.min(wait, 2 ** 31 - 1), AbortSignal.any([signal, this.wake.signal]));
      if (signal.aborted) return;
      const asked = this.wake.signal.aborted;
      if (!asked && !failing && renewalDelayMs(identity.current().certificatePem) > 0) continue;
      try {
        await this.renewOnce();
        failing = false;
        backoff.reset();
      } catch (err) {
        const error = ConnectError.from(err);
        if (error.code === Code.Unauthenticated) {
          this.options.onFatal(error);
          return;
        }
        if (error.code === Code.FailedPrecondition || error.code === Code.PermissionDenied) {
          this.options.onRefused(error);
          return;
        }
        failing = true;
        logger.warn(
          { err: error.message, failures: backoff.attempts + 1 },
          "identity renewal failed; retrying",
        );
      }
    }
  }

  private renewOnce(): Promise<void> {
    this.inFlight ??= this.renew().finally(() => (this.inFlight = undefined));
    return this.inFlight;
  }

  private async renew(): Promise<void> {
    const { identity, enrollment, logger } = this.options;
    const current = identity.current();
    const before = identity.facts();
    const key = generateP256KeyPair();
    const res = await enrollment.renew(
      create(RenewRequestSchema, {
        csrPem: await buildCsr(key.privateKeyPem, before.subjectCommonName ?? ""),
      }),
    );
    const next: TlsCredentials = {
      privateKeyPem: key.privateKeyPem,
      certificatePem: res.certificatePem,
      chainPem: res.chainPem.flatMap(splitCertificates),
      caBundlePem: res.caBundlePem || current.caBundlePem,
    };
    checkRenewed(next, key.publicKeyPem, before.spiffeId);
    identity.replace(next);
    const after = identity.facts();
    logger.info({ serial: after.serialHex, notAfter: after.notAfter.toISOString() }, "node identity renewed");
  }
}

/** A renewed certificate must be for our new key, keep our identity, and chain to the bundle it came with. */
function checkRenewed(next: TlsCredentials, publicKeyPem: string, spiffeId: string | undefined): void {
  const facts = inspectCertificate(next.certificatePem);
  const certKey = createPublicKey(next.certificatePem).export({ type: "spki", format: "der" });
  const ourKey = createPublicKey(publicKeyPem).export({ type: "spki", format: "der" });
  if (!certKey.equals(ourKey))
    throw new Error("the renewed certificate is not for the key this agent generated");
  if (facts.spiffeId !== spiffeId) {
    throw new Error(`the renewed certificate is for ${facts.spiffeId}, not ${spiffeId}`);
  }
  if (!verifyChain(next.certificatePem, next.chainPem, next.caBundlePem)) {
    throw new Error("the renewed certificate does not chain to the CA bundle");
  }
}
