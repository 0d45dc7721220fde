import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { invalidArgument } from "./errors.js";

// google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
const MIN_SECONDS = -62_135_596_800n;
const MAX_SECONDS = 253_402_300_799n;

/** A Timestamp field of a request as a Date; InvalidArgument naming the field when it is out of range. */
export function requestTimestamp(ts: Timestamp, field: string): Date {
  if (ts.seconds < MIN_SECONDS || ts.seconds > MAX_SECONDS || ts.nanos < 0 || ts.nanos > 999_999_999) {
    throw invalidArgument(
      `${field} is not a valid timestamp: seconds must fall in the years 1 to 9999 and nanos in 0 to 999999999`,
    );
  }
  return timestampDate(ts);
}
