import { randomBytes, randomInt, scrypt, timingSafeEqual, type ScryptOptions } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  aborted,
  actorOf,
  buildSpiffeId,
  failedPrecondition,
  inspectCertificate,
  isPlatformAdmin,
  permissionDenied,
  requireOrganization,
  resourceExhausted,
  splitCertificates,
  transaction,
  unauthenticated,
  unavailable,
  viewOrganization,
  type Principal,
  type Tx,
} from "@fabric/platform";
import { SignRequestSchema, type SignResponse } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { PrincipalKind } from "@fabric/proto/fabric/common/v1/common_pb.js";
import type {
  BootstrapDeveloperRequest,
  IssueDeveloperPinRequest,
} from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { ANONYMOUS, markAudited, type Enrollment } from "./context.js";
import { recordEnrollment } from "./principal-enrollments.js";
import { developerBundleMac } from "./protocol.js";
import { requireOrganizationCluster } from "./registry-scope.js";
import { checkCsr, optionalOrganizationId, requireClusterId, requireDeveloperId } from "./validation.js";

/**
 * Developer PINs: 6 random digits, valid 24 h, single use, stored only as an scrypt hash (a PIN has
 * ~20 bits, so the hash must be slow). Wrong PINs count towards a lockout that only a new PIN lifts.
 *
 * The lockout is a deliberate trade-off. It caps guessing at FABRIC_PIN_MAX_ATTEMPTS tries per PIN
 * (5 of 10^6) however many addresses an attacker has; the price is that anyone who knows a developer id
 * can lock a pending PIN with that many wrong tries, and then the right PIN is refused too. What the
 * attacker gains is a delay, never an identity: every wrong try is audited with its address, and the
 * admin issues a new PIN (which lifts the lockout) over the separate channel. Counting per address
 * instead would hand a distributed guesser 5 tries per address.
 */
const SCRYPT: ScryptOptions = { N: 16_384, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const KEY_LENGTH = 32;

function scryptAsync(secret: string, salt: Buffer, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(secret, salt, KEY_LENGTH, options, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

/** `scrypt$N$r$p$<salt b64>$<hash b64>`: the parameters travel with the hash so they can be raised later. */
export async function hashPin(pin: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scryptAsync(pin, salt, SCRYPT);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString("base64")}$${hash.toString("base64")}`;
}

export async function pinMatches(pin: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split("$");
  if (scheme !== "scrypt" || !salt || !hash) return false;
  const expected = Buffer.from(hash, "base64");
  const actual = await scryptAsync(pin, Buffer.from(salt, "base64"), {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: SCRYPT.maxmem!,
  });
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

// Compared against when the developer has no PIN, so unknown ids cost as much time as wrong PINs.
const NO_PIN = hashPin("no pin issued");

/**
 * Binds a developer id to an organization for good, or checks the binding it has: developer ids are
 * global (CN and SPIFFE ID `user/<id>` name no organization), so an id one organization's developer holds
 * must never be issued to another's. The first PIN for an id binds it to the PIN's organization ('' =
 * none); afterwards only that organization's admins (and platform-admins, for that organization) may
 * issue PINs for it. Returns the organization the PIN is for. Runs in the issuing transaction, the binding
 * row locked, so two first PINs for one id cannot both bind it.
 */
async function bindDeveloper(
  tx: Tx,
  principal: Principal,
  developerId: string,
  requested: { organizationId: string; named: boolean },
): Promise<string> {
  const actor = actorOf(principal);
  await tx.query(
    `INSERT INTO developers (developer_id, organization_id, bound_by_kind, bound_by_id) VALUES ($1, $2, $3, $4)
     ON CONFLICT (developer_id) DO NOTHING`,
    [developerId, requested.organizationId, actor.kind, actor.id],
  );
  const { rows } = await tx.query<{ organization_id: string }>(
    "SELECT organization_id FROM developers WHERE developer_id = $1 FOR UPDATE",
    [developerId],
  );
  const bound = rows[0]!.organization_id;
  // A platform-admin naming no organization re-issues for the one the developer belongs to.
  if (isPlatformAdmin(principal) && !requested.named) return bound;
  if (bound === requested.organizationId) return bound;
  if (isPlatformAdmin(principal)) {
    throw failedPrecondition(
      `developer "${developerId}" belongs to ${bound ? `organization "${bound}"` : "no organization"}; a developer id stays with its organization: issue the PIN for that one, or use another developer id`,
    );
  }
  // Whose it is stays unsaid: only that it is not the caller's to issue.
  throw permissionDenied(
    `developer id "${developerId}" belongs to another organization; choose another developer id`,
  );
}

export async function issueDeveloperPin(
  deps: Enrollment,
  principal: Principal,
  req: IssueDeveloperPinRequest,
): Promise<{ pin: string; expiresAt: Date }> {
  const developerId = requireDeveloperId(req.developerId);
  const named = optionalOrganizationId(req.organizationId);
  // An org-admin issues only for its own organization (the one in its certificate when none is named).
  if (named) requireOrganization(principal, named);
  const requested = { organizationId: named || viewOrganization(principal, ""), named: named !== "" };
  const defaultClusterId = req.defaultClusterId
    ? requireClusterId(req.defaultClusterId, "default_cluster_id")
    : "";
  // A platform-admin may point a developer at any cluster; an org-admin only at one serving its own.
  if (defaultClusterId && !isPlatformAdmin(principal)) {
    await requireOrganizationCluster(deps, requested.organizationId, defaultClusterId);
  }
  const pin = String(randomInt(0, 1_000_000)).padStart(6, "0");
  const pinHash = await hashPin(pin);
  const actor = actorOf(principal);
  const expiresAt = await transaction(deps.pool, async (tx) => {
    const organizationId = await bindDeveloper(tx, principal, developerId, requested);
    // One row per developer: a new PIN replaces the old one and lifts a lockout (the binding above has
    // made sure it is the same organization's).
    const { rows } = await tx.query<{ expires_at: Date }>(
      `INSERT INTO developer_pins (developer_id, pin_hash, organization_id, default_cluster_id, expires_at,
         issued_by_kind, issued_by_id)
       VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5::double precision / 1000), $6, $7)
       ON CONFLICT (developer_id) DO UPDATE SET pin_hash = EXCLUDED.pin_hash,
         organization_id = EXCLUDED.organization_id, default_cluster_id = EXCLUDED.default_cluster_id,
         issued_at = now(), expires_at = EXCLUDED.expires_at, issued_by_kind = EXCLUDED.issued_by_kind,
         issued_by_id = EXCLUDED.issued_by_id, failed_attempts = 0, used_at = NULL
       RETURNING expires_at`,
      [developerId, pinHash, organizationId, defaultClusterId, deps.config.pinTtlMs, actor.kind, actor.id],
    );
    tx.audit({
      actorId: actor.id,
      actorKind: actor.kind,
      action: "developer_pin.issue",
      targetType: "developer",
      targetId: developerId,
      orgId: organizationId,
      outcome: "success",
      details: { defaultClusterId },
    });
    return rows[0]!.expires_at;
  });
  return { pin, expiresAt };
}

interface PinRow {
  developer_id: string;
  pin_hash: string;
  organization_id: string;
  default_cluster_id: string;
  expires_at: Date;
  failed_attempts: number;
  used_at: Date | null;
}

export interface Bootstrapped {
  certificatePem: string;
  chainPem: string[];
  caBundlePem: string;
  notAfter: Date;
  mac: Buffer;
  organizationId: string;
  defaultClusterId: string;
}

type Attempt =
  | { ok: true; signed: SignResponse; row: PinRow }
  | {
      ok: false;
      error: Error;
      /** no PIN row: the caller still spends a PIN check's time */ unknown?: boolean;
    };

// Postgres: FOR UPDATE NOWAIT found the row locked.
const LOCK_NOT_AVAILABLE = "55P03";

/**
 * Exchanges a PIN for a developer certificate. The PIN row stays locked from check to commit, so two
 * bootstraps with one PIN cannot both succeed (a concurrent one is refused with Aborted); a wrong PIN's failure count commits even though the call
 * fails, and a CA failure leaves the PIN usable.
 */
export async function bootstrapDeveloper(
  deps: Enrollment,
  req: BootstrapDeveloperRequest,
  address: string,
): Promise<Bootstrapped> {
  // The developer id has no failure budget of its own: its PIN's lockout is that, and a stricter one.
  const admitted = deps.limits.admitAddress("BootstrapDeveloper", address);
  const developerId = requireDeveloperId(req.developerId);
  if (!/^\d{6}$/.test(req.pin)) {
    throw unauthenticated("wrong developer id or PIN; check the 6-digit PIN your admin gave you");
  }
  await checkCsr(req.csrPem);

  const attempt = await transaction(deps.pool, async (tx): Promise<Attempt> => {
    // NOWAIT: a bootstrap racing another for the same developer is refused at once instead of queueing
    // on the row lock, which is held across the PIN check and the CA's signature; queued attempts would
    // each hold a pooled connection meanwhile, and a hundred of them drain the pool for everyone.
    const found = await tx
      .query<PinRow>("SELECT * FROM developer_pins WHERE developer_id = $1 FOR UPDATE NOWAIT", [developerId])
      .catch((err: unknown) => {
        if ((err as { code?: string }).code === LOCK_NOT_AVAILABLE) {
          throw aborted(`another bootstrap of developer ${developerId} is in progress; retry in a moment`);
        }
        throw err;
      });
    const row = found.rows[0];
    if (!row) {
      return {
        ok: false,
        unknown: true,
        error: unauthenticated("wrong developer id or PIN; ask your admin for a PIN"),
      };
    }
    if (row.failed_attempts >= deps.config.pinMaxAttempts) {
      return {
        ok: false,
        error: resourceExhausted(
          `the PIN of developer ${developerId} is locked after ${row.failed_attempts} wrong attempts; ask an admin for a new PIN`,
        ),
      };
    }
    if (!(await pinMatches(req.pin, row.pin_hash))) {
      const failures = row.failed_attempts + 1;
      await tx.query("UPDATE developer_pins SET failed_attempts = $2 WHERE developer_id = $1", [
        developerId,
        failures,
      ]);
      const left = deps.config.pinMaxAttempts - failures;
      const error = unauthenticated(
        left > 0
          ? `wrong developer id or PIN; ${left} attempt(s) left before the PIN is locked`
          : "wrong developer id or PIN; the PIN is now locked: ask an admin for a new PIN",
      );
      // The failure count and its audit event commit together; the caller must not audit it again.
      tx.audit({
        actorId: ANONYMOUS.id,
        actorKind: ANONYMOUS.kind,
        action: "developer.bootstrap",
        targetType: "developer",
        targetId: developerId,
        orgId: row.organization_id,
        outcome: "refused",
        details: {
          address,
          code: "Unauthenticated",
          reason: error.message,
          failedAttempts: String(failures),
        },
      });
      return { ok: false, error: markAudited(error) };
    }
    admitted.proven();
    if (row.used_at) {
      return {
        ok: false,
        error: failedPrecondition(
          `this PIN was already used at ${row.used_at.toISOString()}; renew with your certificate, or ask an admin for a new PIN`,
        ),
      };
    }
    if (row.expires_at <= new Date()) {
      return { ok: false, error: failedPrecondition("this PIN has expired; ask an admin for a new PIN") };
    }
    let signed: SignResponse;
    try {
      signed = await deps.ca.sign(
        create(SignRequestSchema, {
          csrPem: req.csrPem,
          principalKind: PrincipalKind.USER,
          principalId: developerId,
          organizationId: row.organization_id,
          grants: ["developer"],
          requestedLifetime: durationFromMs(deps.config.userCertificateLifetimeMs),
          authorizationRef: `developer-pin/${developerId}`,
        }),
      );
    } catch (err) {
      const error = ConnectError.from(err);
      if (error.code === Code.Unavailable || error.code === Code.DeadlineExceeded) {
        throw unavailable(
          `the CA cannot sign right now (${error.rawMessage}); your PIN is still valid, retry shortly`,
        );
      }
      throw error;
    }
    await tx.query("UPDATE developer_pins SET used_at = now() WHERE developer_id = $1", [developerId]);
    await recordEnrollment(tx, {
      spiffeId: buildSpiffeId({ trustDomain: deps.config.trustDomain, kind: "user", id: developerId }),
      kind: "user",
      principalId: developerId,
      lifetimeMs: deps.config.userCertificateLifetimeMs,
    });
    tx.audit({
      actorId: ANONYMOUS.id,
      actorKind: ANONYMOUS.kind,
      action: "developer.bootstrap",
      targetType: "developer",
      targetId: developerId,
      orgId: row.organization_id,
      outcome: "success",
      details: { address, serial: signed.serial },
    });
    return { ok: true, signed, row };
  });
  if (!attempt.ok) {
    // An unknown developer costs as much time as a wrong PIN (outside the transaction: no connection held).
    if (attempt.unknown) await pinMatches(req.pin, await NO_PIN);
    throw attempt.error;
  }
  const { signed, row } = attempt;
  return {
    certificatePem: signed.certificatePem,
    chainPem: signed.chainPem.flatMap(splitCertificates),
    caBundlePem: signed.caBundlePem,
    notAfter: signed.notAfter
      ? timestampDate(signed.notAfter)
      : inspectCertificate(signed.certificatePem).notAfter,
    mac: developerBundleMac(req.pin, developerId, signed.caBundlePem),
    organizationId: row.organization_id,
    defaultClusterId: row.default_cluster_id,
  };
}
