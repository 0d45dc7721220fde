import { create } from "@bufbuild/protobuf";
import { DurationSchema, durationMs as toMs, type Duration } from "@bufbuild/protobuf/wkt";

/** A protobuf Duration in milliseconds; unset or zero means "use the default". */
export function durationMs(d: Duration | undefined, defaultMs: number): number {
  const ms = d ? toMs(d) : 0;
  return ms > 0 ? ms : defaultMs;
}

/** A Duration from fractional milliseconds, kept to whole nanoseconds (wire nanos must be integers). */
export function durationFromFractionalMs(ms: number): Duration {
  const nanos = Math.round(ms * 1e6);
  return create(DurationSchema, { seconds: BigInt(Math.floor(nanos / 1e9)), nanos: nanos % 1e9 });
}
