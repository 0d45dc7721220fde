import { fileURLToPath } from "node:url";
import { z } from "zod";
import { setting, type baseSettings, type ServiceDefinition } from "@fabric/platform";
import { buildEnrollment } from "./server.js";

const SECOND = 1_000;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/**
 * Enrollment's settings, on top of the platform's base settings (trustDomain, host, grpcPort, httpPort,
 * databaseUrl, identityDir, logLevel, ...). Each is read from FABRIC_<SCREAMING_SNAKE_NAME> or the YAML
 * file named by FABRIC_CONFIG.
 *
 * FABRIC_CA_URL (the base setting caUrl) is required by enrollment: it signs every identity through the
 * CA and follows its revocations; the process stops at start naming it when it is missing.
 */
export const enrollmentSettings = {
  // FABRIC_REGISTRY_URL: the registry's mTLS gRPC URL, for RegisterNode at approval. Required.
  registryUrl: setting.url(),
  // FABRIC_ROUTER_URL: the router's mTLS gRPC URL; only used as the default public router endpoint.
  routerUrl: setting.url().optional(),

  // FABRIC_JOIN_TOKEN_DEFAULT_TTL_MS: lifetime of a join token created with ttl 0 (1 hour).
  joinTokenDefaultTtlMs: setting.durationMs(HOUR),
  // FABRIC_JOIN_TOKEN_MAX_TTL_MS: the longest ttl CreateJoinToken accepts (24 hours, which it may lower but
  // not raise); longer is refused.
  joinTokenMaxTtlMs: z.coerce.number().int().positive().max(DAY).default(DAY),
  // FABRIC_EXPIRED_TOKEN_RETENTION_MS: how long an expired token is kept (so a late Join is told "expired"
  // rather than "unknown", and operators still see it) before the cleanup job deletes it (7 days).
  expiredTokenRetentionMs: setting.durationMs(7 * DAY),
  // FABRIC_CLEANUP_INTERVAL_MS: period of the job that expires undecided join requests and deletes old
  // expired tokens (1 minute).
  cleanupIntervalMs: setting.durationMs(60 * SECOND),

  // FABRIC_JOIN_REQUEST_TTL_MS: how long a join request waits for a decision before it expires, and how
  // long an approved node can collect its certificate through WaitForApproval (24 hours).
  joinRequestTtlMs: setting.durationMs(DAY),
  // FABRIC_WAIT_POLL_INTERVAL_MS: WaitForApproval streams are woken at once by decisions made in this
  // process; this poll catches decisions made by another replica (2 seconds).
  waitPollIntervalMs: setting.durationMs(2 * SECOND),
  // FABRIC_RECONCILE_INTERVAL_MS: period of the reconciler that completes approvals interrupted by a crash
  // or an unreachable CA/registry, and revokes certificates of abandoned approvals (10 seconds).
  reconcileIntervalMs: setting.durationMs(10 * SECOND),

  // FABRIC_NODE_CERTIFICATE_LIFETIME_MS: node certificate lifetime when an approval (or auto-approval, or a
  // node's renewal) does not set one (30 days; tests may set seconds). Never more than 90 days.
  nodeCertificateLifetimeMs: z.coerce
    .number()
    .int()
    .positive()
    .max(90 * DAY)
    .default(30 * DAY),
  // FABRIC_USER_CERTIFICATE_LIFETIME_MS: lifetime of a developer certificate from BootstrapDeveloper, and of
  // renewed developer and admin certificates that ask for none (30 days). Never more than 90 days.
  userCertificateLifetimeMs: z.coerce
    .number()
    .int()
    .positive()
    .max(90 * DAY)
    .default(30 * DAY),
  // FABRIC_MAX_ENROLLMENT_AGE_MS: how long after its first enrollment an identity may keep renewing; after
  // that it must enroll again (90 days).
  maxEnrollmentAgeMs: setting.durationMs(90 * DAY),

  // FABRIC_PIN_TTL_MS: validity of a developer PIN (24 hours).
  pinTtlMs: setting.durationMs(DAY),
  // FABRIC_PIN_MAX_ATTEMPTS: wrong PINs after which the developer's PIN is locked until an admin issues a
  // new one (5).
  pinMaxAttempts: z.coerce.number().int().min(1).max(100).default(5),

  // FABRIC_ADDRESS_RATE_PER_SECOND / FABRIC_ADDRESS_BURST: token bucket per source IP for the anonymous RPCs
  // (Join, WaitForApproval, BootstrapDeveloper): sustained rate and burst (1/s, burst 20). Every attempt
  // draws on it; one that proves its credential (right token, signature or PIN) gives its token back, so
  // only failures use it up.
  addressRatePerSecond: z.coerce.number().positive().default(1),
  addressBurst: z.coerce.number().int().min(1).default(20),
  // FABRIC_CREDENTIAL_RATE_PER_SECOND / FABRIC_CREDENTIAL_BURST: token bucket of wrong secrets per join
  // token id (Join) and join request id (WaitForApproval), whatever address they come from (0.5/s, burst
  // 10). Only wrong secrets draw on it and it never holds back the right one. Developer ids have the PIN
  // lockout (FABRIC_PIN_MAX_ATTEMPTS) instead.
  credentialRatePerSecond: z.coerce.number().positive().default(0.5),
  credentialBurst: z.coerce.number().int().min(1).default(10),

  // FABRIC_PUBLIC_CA_URL, FABRIC_PUBLIC_ENROLLMENT_URL, FABRIC_PUBLIC_REGISTRY_URL, FABRIC_PUBLIC_ROUTER_URL:
  // the endpoints developers' CLIs are told to use (DeveloperSettings). Default: caUrl, this service's own
  // https://host:grpcPort, registryUrl and routerUrl.
  publicCaUrl: setting.url().optional(),
  publicEnrollmentUrl: setting.url().optional(),
  publicRegistryUrl: setting.url().optional(),
  publicRouterUrl: setting.url().optional(),
};

/** Enrollment's validated configuration: the base settings plus the ones above. */
export type EnrollmentConfig = z.infer<
  z.ZodObject<ReturnType<typeof baseSettings> & typeof enrollmentSettings>
>;

export const enrollmentDefinition = {
  name: "enrollment",
  defaults: { grpcPort: 7401, httpPort: 7411 },
  settings: enrollmentSettings,
  migrationsDir: fileURLToPath(new URL("../migrations", import.meta.url)),
  // Join, WaitForApproval and BootstrapDeveloper callers have no certificate yet.
  clientCertificates: "optional",
  build: buildEnrollment,
} satisfies ServiceDefinition<typeof enrollmentSettings>;
