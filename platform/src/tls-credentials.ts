import { normalizePem } from "./pki/pem.js";

/** A process's own identity: key, certificate and chain, and the roots it trusts. */
export interface TlsCredentials {
  privateKeyPem: string;
  certificatePem: string;
  /** Intermediates between the certificate and a root, leaf excluded. */
  chainPem: string[];
  /** Roots trusted for peers. */
  caBundlePem: string;
}

/** node:tls secure-context options for these credentials, TLS 1.3 only. */
export function secureContextOptions(creds: TlsCredentials) {
  return {
    key: creds.privateKeyPem,
    cert: [creds.certificatePem, ...creds.chainPem].map(normalizePem).join(""),
    ca: creds.caBundlePem,
    minVersion: "TLSv1.3" as const,
  };
}
