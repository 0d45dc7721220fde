// The few DER building blocks the issuance hot path needs. Certificates are assembled by concatenating
// pre-encoded constant parts with the handful of per-certificate values encoded here, which is what
// makes issuance fast: no ASN.1 object model is built per certificate.

export function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One TLV whose value is the concatenation of `parts`. */
export function tlv(tag: number, ...parts: Buffer[]): Buffer {
  const body = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

export const sequence = (...parts: Buffer[]) => tlv(0x30, ...parts);
export const octetString = (value: Buffer) => tlv(0x04, value);

// The issuer encodes the same handful of OIDs for every certificate: encode each once.
const encodedOids = new Map<string, Buffer>();

export function objectIdentifier(oid: string): Buffer {
  let encoded = encodedOids.get(oid);
  if (!encoded) {
    encoded = encodeObjectIdentifier(oid);
    encodedOids.set(oid, encoded);
  }
  return encoded;
}

function encodeObjectIdentifier(oid: string): Buffer {
  const arcs = oid.split(".").map(Number);
  const bytes: number[] = [40 * arcs[0]! + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const chunk: number[] = [arc & 0x7f];
    for (let n = Math.floor(arc / 128); n > 0; n = Math.floor(n / 128)) chunk.unshift(0x80 | (n & 0x7f));
    bytes.push(...chunk);
  }
  return tlv(0x06, Buffer.from(bytes));
}

/** A non-negative INTEGER from big-endian magnitude bytes (minimal, sign byte added when needed). */
export function unsignedInteger(magnitude: Buffer): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const trimmed = magnitude.subarray(start);
  return tlv(0x02, trimmed[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed);
}

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, always UTC. */
export function x509Time(date: Date): Buffer {
  const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-T:]/g, "");
  const year = date.getUTCFullYear();
  if (year >= 1950 && year < 2050) return tlv(0x17, Buffer.from(`${digits.slice(2)}Z`, "ascii"));
  return tlv(0x18, Buffer.from(`${digits}Z`, "ascii"));
}

const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;

/** A directory string as @peculiar/x509 writes it: PrintableString when the text allows, else UTF8String. */
export function directoryString(value: string): Buffer {
  return PRINTABLE.test(value)
    ? tlv(0x13, Buffer.from(value, "ascii"))
    : tlv(0x0c, Buffer.from(value, "utf8"));
}

/** A parsed TLV: where it sits in its buffer. */
export interface Tlv {
  tag: number;
  /** Offset of the tag byte. */
  start: number;
  /** Offset of the first value byte. */
  valueStart: number;
  /** Offset just past the value. */
  end: number;
}

export class DerError extends Error {}

/** Reads the TLV at `offset`, refusing anything that runs past `limit`. */
export function readTlv(buf: Buffer, offset: number, limit = buf.length): Tlv {
  if (offset + 2 > limit) throw new DerError("truncated DER");
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError("multi-byte DER tags are not supported");
  let length = buf[offset + 1]!;
  let valueStart = offset + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4) throw new DerError("unsupported DER length");
    if (valueStart + count > limit) throw new DerError("truncated DER");
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + buf[valueStart + i]!;
    valueStart += count;
  }
  const end = valueStart + length;
  if (end > limit) throw new DerError("DER value runs past its container");
  return { tag, start: offset, valueStart, end };
}

/** The TLVs directly inside a constructed TLV. */
export function childrenOf(buf: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let offset = parent.valueStart; offset < parent.end;) {
    const child = readTlv(buf, offset, parent.end);
    out.push(child);
    offset = child.end;
  }
  return out;
}

export const rawOf = (buf: Buffer, t: Tlv) => buf.subarray(t.start, t.end);
export const valueOf = (buf: Buffer, t: Tlv) => buf.subarray(t.valueStart, t.end);

/** Dotted text of an OBJECT IDENTIFIER's value bytes. */
export function decodeObjectIdentifier(value: Buffer): string {
  if (value.length === 0) throw new DerError("empty OBJECT IDENTIFIER");
  const first = value[0]!;
  const arcs = [first < 80 ? Math.floor(first / 40) : 2, first < 80 ? first % 40 : first - 80];
  let n = 0;
  for (const byte of value.subarray(1)) {
    n = n * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) {
      arcs.push(n);
      n = 0;
    }
  }
  return arcs.join(".");
}

/** The raw DER of a certificate's subject Name (copied verbatim into what it issues). */
export function certificateSubjectDer(certificateDer: Buffer): Buffer {
  const [tbs] = childrenOf(certificateDer, readTlv(certificateDer, 0));
  const fields = childrenOf(certificateDer, tbs!);
  // version [0] is optional; subject follows serial, signature, issuer and validity.
  return Buffer.from(rawOf(certificateDer, fields[fields[0]!.tag === 0xa0 ? 5 : 4]!));
}

/** The subjectPublicKey BIT STRING contents of an SPKI (the EC point): what key identifiers hash. */
export function subjectPublicKeyBits(spki: Buffer): Buffer {
  const [, bits] = childrenOf(spki, readTlv(spki, 0));
  if (!bits || bits.tag !== 0x03) throw new DerError("not a SubjectPublicKeyInfo");
  return Buffer.from(valueOf(spki, bits).subarray(1));
}

/** X.509 and OCSP times carry whole seconds. */
export function wholeSeconds(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}
