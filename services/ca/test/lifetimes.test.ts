import { describe, expect, it } from "vitest";
import { BACKDATE_MS, DEFAULT_LIFETIMES, validityFor } from "../src/lifetimes.js";

const DAY = 86_400_000;
const now = Date.UTC(2030, 0, 1, 12, 0, 0);
const far = new Date(now + 365 * DAY);

describe("validityFor", () => {
  it("uses the kind's default, backdated one minute", () => {
    const v = validityFor("node", 0, { policy: DEFAULT_LIFETIMES, issuerNotAfter: far, now });
    expect(v.notBefore.getTime()).toBe(now - BACKDATE_MS);
    expect(v.notAfter.getTime()).toBe(now + 30 * DAY);
    expect(
      validityFor("service", 0, { policy: DEFAULT_LIFETIMES, issuerNotAfter: far, now }).notAfter.getTime(),
    ).toBe(now + DAY);
  });

  it("clamps a longer request to the kind's cap and to the issuer's expiry", () => {
    const policy = DEFAULT_LIFETIMES;
    expect(validityFor("user", 400 * DAY, { policy, issuerNotAfter: far, now }).notAfter.getTime()).toBe(
      now + 90 * DAY,
    );
    expect(validityFor("service", 7 * DAY, { policy, issuerNotAfter: far, now }).notAfter.getTime()).toBe(
      now + DAY,
    );
    const soon = new Date(now + 10 * DAY);
    expect(validityFor("admin", 0, { policy, issuerNotAfter: soon, now }).notAfter).toEqual(soon);
  });

  it("starts after the principal's last principal-wide revocation", () => {
    const revokedAt = new Date(now - 1_500);
    const v = validityFor("node", 0, {
      policy: DEFAULT_LIFETIMES,
      issuerNotAfter: far,
      now,
      startAfter: revokedAt,
    });
    expect(v.notBefore.getTime()).toBe(now - 1_000);
    expect(v.notBefore > revokedAt).toBe(true);
  });

  it("refuses to issue past the intermediate's expiry", () => {
    expect(() =>
      validityFor("node", 0, { policy: DEFAULT_LIFETIMES, issuerNotAfter: new Date(now - 1), now }),
    ).toThrow(/intermediate CA certificate has expired/);
  });
});
