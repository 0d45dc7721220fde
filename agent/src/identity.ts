import { inspectCertificate, type CertificateFacts, type TlsCredentials } from "@fabric/platform";
import { installIdentity, type AgentPaths } from "./state-dir.js";

/**
 * The agent's current identity. `current()` returns the same object until a renewal replaces it, which is
 * what the platform RPC client keys its connections on: a new object means new TLS credentials.
 */
export class IdentityHolder {
  private creds: TlsCredentials;
  private info: CertificateFacts;
  private readonly listeners = new Set<(creds: TlsCredentials) => void>();

  constructor(
    initial: TlsCredentials,
    private readonly paths: AgentPaths,
  ) {
    this.creds = initial;
    this.info = inspectCertificate(initial.certificatePem);
  }

  current = (): TlsCredentials => this.creds;

  facts(): CertificateFacts {
    return this.info;
  }

  /** Makes a renewed identity current: on disk first (one atomic link swap), then in memory. */
  replace(next: TlsCredentials): void {
    installIdentity(this.paths, next);
    this.creds = next;
    this.info = inspectCertificate(next.certificatePem);
    for (const listener of this.listeners) listener(next);
  }

  onReplaced(listener: (creds: TlsCredentials) => void): void {
    this.listeners.add(listener);
  }
}
