import { createPublicKey } from "node:crypto";
import {
  SERVICE_NAMES,
  generateP256KeyPair,
  saveIdentity,
  type IdentityClaims,
  type ServiceName,
  type TlsCredentials,
} from "@fabric/platform";
import { openCa, serviceIdentityDir, type OpenedCa } from "./ca-directory.js";
import { GRANT_SEPARATOR, recordOf } from "./certificate-record.js";
import { LeafIssuer } from "./leaf-issuer.js";
import { DEFAULT_LIFETIMES, validityFor } from "./lifetimes.js";
import { appendOfflineRecord } from "./offline-journal.js";

export interface OfflineIssueOptions {
  /** 0 or absent = the kind's default; clamped to the kind's cap (30/90 days, services 24 h). */
  lifetimeMs?: number;
  /** Explicit validity for fixtures (e.g. an expired identity); bypasses the lifetime policy. */
  notBefore?: Date;
  notAfter?: Date;
  /** Server names, for service identities. */
  dnsNames?: string[];
  ipAddresses?: string[];
  /** Recorded in the inventory; default `offline/<kind>/<id>`. */
  authorizationRef?: string;
}

export type OfflineClaims = Omit<IdentityClaims, "trustDomain">;

/**
 * Issues identities with the CA directory's intermediate, without a running CA: for `initCa` (service
 * identities), `fabric up` (the first platform-admin) and test fixtures. Holding the passphrase is the
 * authorization. Each certificate is journaled for the CA's inventory; the key is generated here and
 * returned to the caller only.
 */
export class OfflineIssuer {
  private constructor(
    private readonly ca: OpenedCa,
    private readonly leaves: LeafIssuer,
  ) {}

  static async open(options: { caDir: string; passphrase: string }): Promise<OfflineIssuer> {
    const ca = await openCa(options.caDir, options.passphrase);
    const leaves = await LeafIssuer.create({
      issuerCertificatePem: ca.intermediatePem,
      issuerKey: ca.intermediateKey,
      crlUrl: ca.meta.crlUrl,
      ocspUrl: ca.meta.ocspUrl,
    });
    return new OfflineIssuer(ca, leaves);
  }

  get trustDomain(): string {
    return this.ca.meta.trustDomain;
  }

  issue(claims: OfflineClaims, options: OfflineIssueOptions = {}): TlsCredentials {
    const key = generateP256KeyPair();
    const spki = createPublicKey(key.publicKeyPem).export({ type: "spki", format: "der" });
    const full: IdentityClaims = { ...claims, trustDomain: this.ca.meta.trustDomain };
    const policy = validityFor(claims.kind, options.lifetimeMs ?? 0, {
      policy: DEFAULT_LIFETIMES,
      issuerNotAfter: this.leaves.issuerNotAfter,
    });
    const leaf = this.leaves.issue({
      claims: full,
      spki,
      notBefore: options.notBefore ?? policy.notBefore,
      notAfter: options.notAfter ?? policy.notAfter,
      ...(options.dnsNames ? { dnsNames: options.dnsNames } : {}),
      ...(options.ipAddresses ? { ipAddresses: options.ipAddresses } : {}),
    });
    const grants = claims.grant ? claims.grant.split(GRANT_SEPARATOR) : [];
    appendOfflineRecord(
      this.ca.dir,
      recordOf(leaf, full, grants, options.authorizationRef ?? `offline/${claims.kind}/${claims.id}`),
    );
    return {
      privateKeyPem: key.privateKeyPem,
      certificatePem: leaf.pem,
      chainPem: [this.ca.intermediatePem],
      caBundlePem: this.ca.rootPem,
    };
  }

  /**
   * (Re)writes the four service identities into `<caDir>/services/<name>/` (24 h, SANs localhost,
   * 127.0.0.1 and the service name), so the services can reach each other at first start, or again
   * after being down longer than their certificates live.
   */
  writeServiceIdentities(): Record<ServiceName, string> {
    const dirs = {} as Record<ServiceName, string>;
    for (const name of SERVICE_NAMES) {
      const dir = serviceIdentityDir(this.ca.dir, name);
      saveIdentity(
        dir,
        this.issue(
          { kind: "service", id: name, grant: name },
          {
            dnsNames: ["localhost", name],
            ipAddresses: ["127.0.0.1"],
            authorizationRef: `init/service/${name}`,
          },
        ),
      );
      dirs[name] = dir;
    }
    return dirs;
  }
}

/** One-shot offline issuance (the CLI's `fabric up` writes its platform-admin identity with this). */
export async function issueIdentity(
  options: { caDir: string; passphrase: string; claims: OfflineClaims } & OfflineIssueOptions,
): Promise<TlsCredentials> {
  const { caDir, passphrase, claims, ...rest } = options;
  return (await OfflineIssuer.open({ caDir, passphrase })).issue(claims, rest);
}
