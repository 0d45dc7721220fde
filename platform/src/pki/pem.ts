/** PEM <-> DER for the block types Fabric handles. */
export type PemLabel = "CERTIFICATE" | "CERTIFICATE REQUEST" | "PRIVATE KEY" | "PUBLIC KEY" | "X509 CRL";

export function toPem(der: Uint8Array | ArrayBuffer, label: PemLabel): string {
  const b64 = Buffer.from(der instanceof ArrayBuffer ? new Uint8Array(der) : der).toString("base64");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** Every block of the given label in a PEM text, as DER, in order. */
export function pemBlocks(pem: string, label: PemLabel): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+?)-----END ${label}-----`, "g");
  return [...pem.matchAll(re)].map((m) => Buffer.from(m[1]!.replace(/\s+/g, ""), "base64"));
}

export function fromPem(pem: string, label: PemLabel): Buffer {
  const [first] = pemBlocks(pem, label);
  if (!first) throw new Error(`no ${label} PEM block found`);
  return first;
}

/** Splits a bundle into one PEM string per certificate. */
export function splitCertificates(pem: string): string[] {
  return pemBlocks(pem, "CERTIFICATE").map((der) => toPem(der, "CERTIFICATE"));
}

/** LF line ends and a final newline, so PEM texts can be concatenated into bundles safely. */
export function normalizePem(pem: string): string {
  const text = pem.replace(/\r\n/g, "\n").trim();
  return `${text}\n`;
}
