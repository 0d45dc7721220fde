// The CRL (RFC 5280 5.1, v2) as DER, written by hand. An ASN.1 object model costs seconds for 100,000
// entries; here what every CRL of a signer repeats is encoded once, and the entries are written straight
// into one buffer whose size is computed first.
import { AsnConvert } from "@peculiar/asn1-schema";
import { derLength, objectIdentifier, octetString, sequence, tlv, unsignedInteger, x509Time } from "./der.js";
import type { SigningAuthority } from "./signing-authority.js";

export interface CrlEntry {
  /** Hex, as the inventory keeps it. */
  serial: string;
  /** Whole seconds since the epoch. */
  revokedAt: number;
  /** RFC 5280 CRLReason; 0 (unspecified) is not written (5.3.1: omit rather than write unspecified). */
  reason: number;
}

export interface CrlContents {
  number: bigint;
  thisUpdate: Date;
  nextUpdate: Date;
  /** In the order they are listed. */
  entries: readonly CrlEntry[];
}

/** The DER every CRL of one signer repeats. */
export interface CrlSigner {
  signatureAlgorithm: Buffer;
  issuer: Buffer;
  /** The authorityKeyIdentifier Extension. */
  authorityKeyIdentifier: Buffer;
}

export function crlSigner(authority: SigningAuthority): CrlSigner {
  return {
    signatureAlgorithm: Buffer.from(AsnConvert.serialize(authority.signatureAlgorithm)),
    issuer: authority.subjectDer,
    authorityKeyIdentifier: Buffer.from(AsnConvert.serialize(authority.authorityKeyIdentifier)),
  };
}

const VERSION_2 = unsignedInteger(Buffer.from([1]));
const OID_CRL_NUMBER = "2.5.29.20";
const OID_CRL_REASON = "2.5.29.21";

/**
 * TBSCertList: version, signature, issuer, thisUpdate, nextUpdate, revokedCertificates, [0] extensions,
 * written into one buffer: at 100,000 entries every extra copy of the list shows.
 */
export function tbsCertList(signer: CrlSigner, crl: CrlContents): Buffer {
  const head = Buffer.concat([
    VERSION_2,
    signer.signatureAlgorithm,
    signer.issuer,
    x509Time(crl.thisUpdate),
    x509Time(crl.nextUpdate),
  ]);
  const crlNumber = sequence(
    objectIdentifier(OID_CRL_NUMBER),
    octetString(unsignedInteger(bigEndian(crl.number))),
  );
  const extensions = tlv(0xa0, sequence(signer.authorityKeyIdentifier, crlNumber));
  const revoked = new RevokedCertificates(crl.entries);
  const length = head.length + revoked.length + extensions.length;
  const out = Buffer.allocUnsafe(headerLength(length) + length);
  let at = writeHeader(out, 0, 0x30, length);
  at += head.copy(out, at);
  at = revoked.write(out, at);
  extensions.copy(out, at);
  return out;
}

/** CertificateList: the TBSCertList, the algorithm again, and the DER ECDSA signature as a BIT STRING. */
export function certificateList(signer: CrlSigner, tbs: Buffer, signature: Buffer): Buffer {
  const bitString = tlv(0x03, Buffer.from([0]), signature);
  const length = tbs.length + signer.signatureAlgorithm.length + bitString.length;
  const header = Buffer.allocUnsafe(headerLength(length));
  writeHeader(header, 0, 0x30, length);
  return Buffer.concat([header, tbs, signer.signatureAlgorithm, bitString]);
}

function bigEndian(n: bigint): Buffer {
  const hex = n.toString(16);
  return Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex");
}

/** crlEntryExtensions holding just the reason code, by CRLReason; none for unspecified (0). */
const REASON_EXTENSIONS = Array.from({ length: 11 }, (_, reason) =>
  reason === 0
    ? Buffer.alloc(0)
    : sequence(sequence(objectIdentifier(OID_CRL_REASON), octetString(tlv(0x0a, Buffer.from([reason]))))),
);

function reasonExtension(reason: number): Buffer {
  const encoded = REASON_EXTENSIONS[reason];
  if (!encoded) throw new Error(`${reason} is not a CRLReason`);
  return encoded;
}

const headerLength = (length: number) => (length < 0x80 ? 2 : 1 + derLength(length).length);

function writeHeader(out: Buffer, at: number, tag: number, length: number): number {
  out[at++] = tag;
  if (length < 0x80) {
    out[at++] = length;
    return at;
  }
  const encoded = derLength(length);
  encoded.copy(out, at);
  return at + encoded.length;
}

// Serials are hex text. Their INTEGER is written from the digits without making a Buffer or a string per
// entry: leading zeros are skipped, an odd digit count starts with a lone nibble, and a first byte with the
// high bit set gets a 0x00 in front (the serial is positive).

function firstDigit(serial: string): number {
  let start = 0;
  while (start < serial.length - 1 && serial.charCodeAt(start) === 0x30) start++;
  return start;
}

function integerLength(serial: string, start: number): number {
  const digits = serial.length - start;
  return digits % 2 ? (digits + 1) / 2 : digits / 2 + (nibble(serial, start) >= 8 ? 1 : 0);
}

const NIBBLES = new Int8Array(128).fill(-1);
for (let i = 0; i < 16; i++) {
  NIBBLES[i.toString(16).charCodeAt(0)] = i;
  NIBBLES[i.toString(16).toUpperCase().charCodeAt(0)] = i;
}

function nibble(serial: string, i: number): number {
  const n = NIBBLES[serial.charCodeAt(i)] ?? -1;
  if (n < 0) throw new Error(`serial ${serial} is not hex`);
  return n;
}

function writeSerial(out: Buffer, at: number, serial: string, start: number, length: number): number {
  at = writeHeader(out, at, 0x02, length);
  let i = start;
  if ((serial.length - start) % 2) out[at++] = nibble(serial, i++);
  else if (length > (serial.length - start) / 2) out[at++] = 0;
  for (; i < serial.length; i += 2) out[at++] = (nibble(serial, i) << 4) | nibble(serial, i + 1);
  return at;
}

// Times: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5), as x509Time writes them.
// Entries come in time order, so the date digits are worked out once per day.
const UTC_TIME_FROM = Date.UTC(1950, 0, 1) / 1000;
const UTC_TIME_UNTIL = Date.UTC(2050, 0, 1) / 1000;
const DAY = 86_400;

const timeLength = (seconds: number) => (seconds >= UTC_TIME_FROM && seconds < UTC_TIME_UNTIL ? 15 : 17);

class TimeWriter {
  private day = Number.NaN;
  /** YYYYMMDD of `day`. */
  private readonly date = Buffer.alloc(8);

  write(out: Buffer, at: number, seconds: number): number {
    const day = Math.floor(seconds / DAY);
    if (day !== this.day) {
      this.day = day;
      const d = new Date(day * DAY * 1000);
      const year = d.getUTCFullYear();
      twoDigits(this.date, 0, Math.floor(year / 100));
      twoDigits(this.date, 2, year % 100);
      twoDigits(this.date, 4, d.getUTCMonth() + 1);
      twoDigits(this.date, 6, d.getUTCDate());
    }
    const utc = timeLength(seconds) === 15;
    out[at++] = utc ? 0x17 : 0x18;
    out[at++] = utc ? 13 : 15;
    at = copyInto(out, at, this.date, utc ? 2 : 0);
    const time = seconds - day * DAY;
    at = twoDigits(out, at, Math.floor(time / 3600));
    at = twoDigits(out, at, Math.floor(time / 60) % 60);
    at = twoDigits(out, at, time % 60);
    out[at++] = 0x5a; // Z
    return at;
  }
}

/** A byte loop: for a few bytes, Buffer#copy's call costs more than the copying. */
function copyInto(out: Buffer, at: number, from: Buffer, start: number): number {
  for (let i = start; i < from.length; i++) out[at++] = from[i]!;
  return at;
}

function twoDigits(out: Buffer, at: number, n: number): number {
  out[at] = 0x30 + Math.floor(n / 10);
  out[at + 1] = 0x30 + (n % 10);
  return at + 2;
}

/**
 * revokedCertificates: SEQUENCE OF SEQUENCE { userCertificate, revocationDate, crlEntryExtensions? }, sized
 * first (length), then written. With no entries it is left out, not written empty (RFC 5280 5.1.2.6).
 */
class RevokedCertificates {
  /** Of the whole SEQUENCE OF, header included. */
  readonly length: number;
  private readonly contents: number;
  /** Per entry: where its serial's significant digits start, its INTEGER's length, its SEQUENCE's. */
  private readonly starts: Int32Array;
  private readonly integers: Int32Array;
  private readonly bodies: Int32Array;

  constructor(private readonly entries: readonly CrlEntry[]) {
    this.starts = new Int32Array(entries.length);
    this.integers = new Int32Array(entries.length);
    this.bodies = new Int32Array(entries.length);
    let contents = 0;
    for (let i = 0; i < entries.length; i++) {
      const { serial, revokedAt, reason } = entries[i]!;
      const start = firstDigit(serial);
      const integer = integerLength(serial, start);
      const body = headerLength(integer) + integer + timeLength(revokedAt) + reasonExtension(reason).length;
      this.starts[i] = start;
      this.integers[i] = integer;
      this.bodies[i] = body;
      contents += headerLength(body) + body;
    }
    this.contents = contents;
    this.length = entries.length > 0 ? headerLength(contents) + contents : 0;
  }

  write(out: Buffer, at: number): number {
    if (this.entries.length === 0) return at;
    const times = new TimeWriter();
    at = writeHeader(out, at, 0x30, this.contents);
    for (let i = 0; i < this.entries.length; i++) {
      const { serial, revokedAt, reason } = this.entries[i]!;
      at = writeHeader(out, at, 0x30, this.bodies[i]!);
      at = writeSerial(out, at, serial, this.starts[i]!, this.integers[i]!);
      at = times.write(out, at, revokedAt);
      at = copyInto(out, at, reasonExtension(reason), 0);
    }
    return at;
  }
}
