import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import type { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { SignRequestSchema } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { saveIdentity } from "./identity-store.js";
import type { Logger } from "./logger.js";
import { inspectCertificate } from "./pki/certificates.js";
import { buildCsr } from "./pki/csr.js";
import { generateP256KeyPair } from "./pki/keys.js";
import { splitCertificates } from "./pki/pem.js";
import { x509 } from "./pki/x509.js";
import type { TlsCredentials } from "./tls-credentials.js";

export const SERVICE_LIFETIME_MS = 24 * 3_600_000;

/** When to renew: two thirds into the certificate's lifetime, minus up to 5% jitter so replicas spread. */
export function renewalDelayMs(certificatePem: string, now = Date.now(), random = Math.random): number {
  const { notBefore, notAfter } = inspectCertificate(certificatePem);
  const lifetime = notAfter.getTime() - notBefore.getTime();
  const at = notBefore.getTime() + (lifetime * 2) / 3 - random() * lifetime * 0.05;
  return Math.max(0, at - now);
}

/** DNS and IP SANs of a certificate, carried over on renewal. */
function serverNames(certificatePem: string): { dnsNames: string[]; ipAddresses: string[] } {
  const san = new x509.X509Certificate(certificatePem).getExtension(x509.SubjectAlternativeNameExtension);
  const items = san?.names.items ?? [];
  return {
    dnsNames: items.filter((n) => n.type === "dns").map((n) => n.value),
    ipAddresses: items.filter((n) => n.type === "ip").map((n) => n.value),
  };
}

/** Renews a service identity through the CA's Sign: a fresh key, the same names, 24 h. */
export async function renewThroughCa(
  ca: Client<typeof CaService>,
  service: string,
  current: TlsCredentials,
): Promise<TlsCredentials> {
  const key = generateP256KeyPair();
  const res = await ca.sign(
    create(SignRequestSchema, {
      csrPem: await buildCsr(key.privateKeyPem, service),
      principalKind: PrincipalKind.SERVICE,
      principalId: service,
      grants: [service],
      requestedLifetime: durationFromMs(SERVICE_LIFETIME_MS),
      ...serverNames(current.certificatePem),
      authorizationRef: `renewal/${inspectCertificate(current.certificatePem).serialHex}`,
    }),
  );
  return {
    privateKeyPem: key.privateKeyPem,
    certificatePem: res.certificatePem,
    chainPem: res.chainPem.flatMap(splitCertificates),
    caBundlePem: res.caBundlePem,
  };
}

/**
 * Holds a service's current identity and renews it at two thirds of its lifetime, retrying with backoff
 * on failure. Each renewal is saved to the identity directory (so a restart picks it up) and handed to
 * `onRenewed` (the server swaps its certificate; clients re-read `current()` per call).
 */
export class ServiceIdentity {
  private creds: TlsCredentials;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    initial: TlsCredentials,
    private readonly options: {
      dir: string;
      renew: (current: TlsCredentials) => Promise<TlsCredentials>;
      onRenewed?: (creds: TlsCredentials) => void;
      logger: Logger;
    },
  ) {
    this.creds = initial;
  }

  current = (): TlsCredentials => this.creds;

  start(): void {
    this.schedule(renewalDelayMs(this.creds.certificatePem));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Renews now; resolves when the new identity is in place. */
  async renewNow(): Promise<void> {
    const next = await this.options.renew(this.creds);
    saveIdentity(this.options.dir, next);
    this.creds = next;
    this.options.onRenewed?.(next);
    const facts = inspectCertificate(next.certificatePem);
    this.options.logger.info(
      { serial: facts.serialHex, notAfter: facts.notAfter },
      "service identity renewed",
    );
  }

  private schedule(delayMs: number, failures = 0): void {
    if (this.stopped) return;
    // setTimeout caps at ~24.8 days; long waits are re-planned in steps.
    this.timer = setTimeout(() => void this.tick(failures), Math.min(delayMs, 2 ** 31 - 1));
    this.timer.unref();
  }

  private async tick(failures: number): Promise<void> {
    const remaining = renewalDelayMs(this.creds.certificatePem);
    if (remaining > 0 && failures === 0) return this.schedule(remaining);
    try {
      await this.renewNow();
      this.schedule(renewalDelayMs(this.creds.certificatePem));
    } catch (err) {
      const backoff = Math.random() * Math.min(60_000, 1_000 * 2 ** Math.min(failures, 6));
      this.options.logger.warn(
        { err: (err as Error).message, failures: failures + 1 },
        "identity renewal failed; retrying",
      );
      this.schedule(backoff, failures + 1);
    }
  }
}
