// Minimal DER for the one type Fabric's custom extensions use (UTF8String). Anything richer goes
// through @peculiar/asn1-schema.

export function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function encodeUtf8String(value: string): Buffer {
  const body = Buffer.from(value, "utf8");
  return Buffer.concat([Buffer.from([0x0c]), derLength(body.length), body]);
}

export function decodeUtf8String(der: Uint8Array): string {
  const buf = Buffer.from(der);
  if (buf[0] !== 0x0c) throw new Error("expected a DER UTF8String");
  let length = buf[1] ?? 0;
  let offset = 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + (buf[2 + i] ?? 0);
    offset = 2 + count;
  }
  if (offset + length !== buf.length) throw new Error("malformed DER UTF8String");
  return buf.subarray(offset).toString("utf8");
}
