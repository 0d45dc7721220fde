import { failedPrecondition, type PrincipalKind } from "@fabric/platform";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** How long certificates of each kind live: the default when none is asked for, and the cap. */
export type LifetimePolicy = Record<PrincipalKind, { defaultMs: number; maxMs: number }>;

/** DESIGN.md, Identity: nodes, users and admins 30 days by default and 90 at most; services 24 hours. */
export const DEFAULT_LIFETIMES: LifetimePolicy = {
  node: { defaultMs: 30 * DAY, maxMs: 90 * DAY },
  user: { defaultMs: 30 * DAY, maxMs: 90 * DAY },
  admin: { defaultMs: 30 * DAY, maxMs: 90 * DAY },
  service: { defaultMs: 24 * HOUR, maxMs: 24 * HOUR },
};

/** Clock skew allowance: certificates start one minute in the past. */
export const BACKDATE_MS = 60_000;

export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

/**
 * The validity a certificate gets: the requested lifetime (0 = the kind's default) clamped to the kind's
 * cap and to the issuer's own expiry, starting one minute ago, but never at or before `startAfter` (the
 * principal's last principal-wide revocation, which covers every certificate with an earlier start).
 */
export function validityFor(
  kind: PrincipalKind,
  requestedMs: number,
  options: { policy: LifetimePolicy; issuerNotAfter: Date; now?: number; startAfter?: Date },
): Validity {
  const now = options.now ?? Date.now();
  const limits = options.policy[kind];
  const lifetime = requestedMs > 0 ? Math.min(requestedMs, limits.maxMs) : limits.defaultMs;
  let notBefore = now - BACKDATE_MS;
  if (options.startAfter && notBefore <= options.startAfter.getTime()) {
    // Certificates carry whole seconds: start at the next second after the revocation.
    notBefore = (Math.floor(options.startAfter.getTime() / 1000) + 1) * 1000;
  }
  const notAfter = Math.min(now + lifetime, options.issuerNotAfter.getTime());
  if (notAfter <= Math.max(notBefore, now)) {
    throw failedPrecondition("the intermediate CA certificate has expired: rotate the CA before issuing");
  }
  return { notBefore: new Date(notBefore), notAfter: new Date(notAfter) };
}
