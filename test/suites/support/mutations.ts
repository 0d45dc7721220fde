// Fuzzing inputs: random protobuf wire data shaped after a message descriptor (so decoding gets deep
// into real fields), and byte- and text-level mutations of valid inputs.
import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { Prng } from "./prng.js";

const ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-";
const TEXT_CHARS = `${ID_CHARS}ABCDEFGHIJKLMNOPQRSTUVWXYZ._:/ @=+,;'"\\\n\t\u0000ü€😀`;
const MAX_DEPTH = 3;

function randomText(prng: Prng): string {
  const length = prng.chance(0.1) ? prng.int(5_000) : prng.int(40);
  return prng.string(length, prng.chance(0.5) ? ID_CHARS : TEXT_CHARS);
}

function writeScalar(w: BinaryWriter, no: number, type: ScalarType, prng: Prng): void {
  const big = () => BigInt.asIntN(64, (BigInt(prng.u32()) << 32n) | BigInt(prng.u32()));
  switch (type) {
    case ScalarType.STRING:
      if (prng.chance(0.05))
        w.tag(no, WireType.LengthDelimited).bytes(prng.bytes(prng.int(32))); // not UTF-8
      else w.tag(no, WireType.LengthDelimited).string(randomText(prng));
      return;
    case ScalarType.BYTES:
      w.tag(no, WireType.LengthDelimited).bytes(prng.bytes(prng.int(prng.chance(0.1) ? 4_096 : 64)));
      return;
    case ScalarType.BOOL:
      w.tag(no, WireType.Varint).bool(prng.chance(0.5));
      return;
    case ScalarType.DOUBLE:
      w.tag(no, WireType.Bit64).double(prng.pick([0, -1, 1e308, Number.NaN, Infinity, prng.u32() / 7]));
      return;
    case ScalarType.FLOAT:
      w.tag(no, WireType.Bit32).float(prng.pick([0, -1, 3.4e38, Number.NaN, prng.u32() / 7]));
      return;
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      w.tag(no, WireType.Bit32).fixed32(prng.u32());
      return;
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      w.tag(no, WireType.Bit64).sfixed64(big());
      return;
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
      w.tag(no, WireType.Varint).int64(prng.chance(0.5) ? BigInt(prng.int(1_000)) : big());
      return;
    default:
      // int32, uint32, sint32 and enums: small, large, negative and out-of-range values alike.
      w.tag(no, WireType.Varint).int32(prng.pick([0, 1, 2, 3, -1, prng.int(100), prng.u32() | 0]));
  }
}

function writeField(w: BinaryWriter, field: DescField, prng: Prng, depth: number): void {
  const no = field.number;
  switch (field.fieldKind) {
    case "scalar":
      writeScalar(w, no, field.scalar, prng);
      return;
    case "enum":
      writeScalar(w, no, ScalarType.INT32, prng);
      return;
    case "message":
      if (depth >= MAX_DEPTH) return;
      w.tag(no, WireType.LengthDelimited).fork();
      writeMessage(w, field.message, prng, depth + 1);
      w.join();
      return;
    case "list": {
      const count = prng.chance(0.05) ? prng.int(200) : prng.int(4);
      for (let i = 0; i < count; i++) {
        if (field.listKind === "message") {
          if (depth >= MAX_DEPTH) return;
          w.tag(no, WireType.LengthDelimited).fork();
          writeMessage(w, field.message, prng, depth + 1);
          w.join();
        } else writeScalar(w, no, field.listKind === "enum" ? ScalarType.INT32 : field.scalar, prng);
      }
      return;
    }
    case "map": {
      const count = prng.int(4);
      for (let i = 0; i < count; i++) {
        w.tag(no, WireType.LengthDelimited).fork();
        writeScalar(w, 1, field.mapKey, prng);
        if (field.mapKind === "message") {
          if (depth < MAX_DEPTH) {
            w.tag(2, WireType.LengthDelimited).fork();
            writeMessage(w, field.message, prng, depth + 1);
            w.join();
          }
        } else writeScalar(w, 2, field.mapKind === "enum" ? ScalarType.INT32 : field.scalar, prng);
        w.join();
      }
      return;
    }
  }
}

function writeMessage(w: BinaryWriter, schema: DescMessage, prng: Prng, depth: number): void {
  for (const field of schema.fields) if (prng.chance(0.6)) writeField(w, field, prng, depth);
  // Now and then a field the schema does not know.
  if (prng.chance(0.1))
    w.tag(1_000 + prng.int(1_000), WireType.LengthDelimited).bytes(prng.bytes(prng.int(16)));
}

/** Wire bytes of a random instance of `schema`: valid framing, arbitrary values. */
export function randomMessageBytes(schema: DescMessage, prng: Prng): Uint8Array {
  const w = new BinaryWriter();
  writeMessage(w, schema, prng, 0);
  return w.finish();
}

/** One random edit of `input`: flips, overwrites, inserts, deletes, truncation, repetition, splicing. */
export function mutateBytes(input: Uint8Array, prng: Prng, donor?: Uint8Array): Buffer {
  const b = Buffer.from(input);
  const at = () => prng.int(b.length + 1);
  switch (prng.int(9)) {
    case 0: {
      if (b.length === 0) return prng.bytes(1);
      const i = prng.int(b.length);
      b.writeUInt8(b.readUInt8(i) ^ (1 << prng.int(8)), i);
      return b;
    }
    case 1: {
      if (b.length === 0) return prng.bytes(1);
      const i = prng.int(b.length);
      b.writeUInt8(prng.pick([0x00, 0xff, 0x7f, 0x80, prng.int(256)]), i);
      return b;
    }
    case 2: {
      const i = at();
      return Buffer.concat([b.subarray(0, i), prng.bytes(1 + prng.int(16)), b.subarray(i)]);
    }
    case 3: {
      const i = at();
      return Buffer.concat([b.subarray(0, i), b.subarray(i + 1 + prng.int(16))]);
    }
    case 4:
      return b.subarray(0, at());
    case 5: {
      const i = at();
      const j = Math.min(b.length, i + 1 + prng.int(64));
      return Buffer.concat([b.subarray(0, j), b.subarray(i, j), b.subarray(j)]);
    }
    case 6: {
      // A length or varint that claims far more than there is.
      const i = at();
      return Buffer.concat([b.subarray(0, i), Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]), b.subarray(i)]);
    }
    case 7: {
      if (!donor || donor.length === 0) return prng.bytes(prng.int(64));
      const d = Buffer.from(donor);
      return Buffer.concat([b.subarray(0, at()), d.subarray(prng.int(d.length))]);
    }
    default: {
      // Several edits at once.
      let out: Buffer = b;
      for (let n = 1 + prng.int(4); n > 0; n--) out = mutateBytes(out, prng, donor);
      return out;
    }
  }
}

/** One random edit of a text input (character level), or its bytes mutated and read back as text. */
export function mutateText(input: string, prng: Prng): string {
  if (prng.chance(0.3)) return mutateBytes(Buffer.from(input, "utf8"), prng).toString("latin1");
  const chars = [...input];
  const i = prng.int(chars.length + 1);
  switch (prng.int(5)) {
    case 0:
      chars.splice(i, 1);
      break;
    case 1:
      chars.splice(i, 0, prng.string(1 + prng.int(8), TEXT_CHARS));
      break;
    case 2:
      chars.splice(i, 1, prng.pick([".", "-", "=", "\n", "\r\n", " ", "\u0000", "😀", "-----"]));
      break;
    case 3:
      return chars.slice(0, i).join("");
    default:
      chars.splice(i, 0, ...chars.slice(i, i + 1 + prng.int(100)));
  }
  return chars.join("");
}
