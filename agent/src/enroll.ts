import { createHash, createPublicKey, sign } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  buildCsr,
  buildSpiffeId,
  createRpcClient,
  generateP256KeyPair,
  inspectCertificate,
  splitCertificates,
  verifyChain,
  writeFileAtomic,
} from "@fabric/platform";
import {
  EnrollmentService,
  EnrollmentServiceJoinRequestSchema,
  JoinRequestState,
  WaitForApprovalRequestSchema,
  type WaitForApprovalResponse,
} from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { Backoff, sleep } from "./backoff.js";
import type { AgentConfig } from "./config.js";
import { AgentExit, EXIT } from "./exit-codes.js";
import { hostFacts } from "./host-facts.js";
import { ProgressLine } from "./progress.js";
import {
  ensureStateDir,
  forgetIdentity,
  hasIdentity,
  installIdentity,
  loadCurrentIdentity,
  writeNodeRecord,
  type AgentPaths,
  type NodeRecord,
} from "./state-dir.js";

export interface EnrollOptions {
  paths: AgentPaths;
  config: AgentConfig & { enrollmentUrl: string };
  /** The join token; used for Join only, never stored or printed. */
  token: string | undefined;
  /** Roots trusted for the anonymous enrollment calls (from --ca-bundle). */
  caBundlePem: string;
  /** Discard an existing identity or pending enrollment and start over. */
  force: boolean;
  out: NodeJS.WritableStream & { isTTY?: boolean };
}

/** A Join whose decision is still awaited, kept so an interrupted `enroll` resumes without a new token. */
interface PendingEnrollment {
  joinRequestId: string;
  challenge: string;
  enrollmentUrl: string;
  expiresAt: string;
}

const WAIT_PREFIX = "fabric-wait-for-approval:";

/** SHA-256 of the key's SubjectPublicKeyInfo DER, as the admin sees it on the join request. */
export function publicKeyFingerprint(publicKeyPem: string): string {
  return createHash("sha256")
    .update(createPublicKey(publicKeyPem).export({ type: "spki", format: "der" }))
    .digest("hex");
}

/** The WaitForApproval proof of key possession, exactly as enrollment.proto defines it. */
export function approvalSignature(
  privateKeyPem: string,
  joinRequestId: string,
  challenge: Uint8Array,
): Buffer {
  const message = Buffer.concat([Buffer.from(`${WAIT_PREFIX}${joinRequestId}:`, "ascii"), challenge]);
  return sign("sha256", message, { key: privateKeyPem, dsaEncoding: "der" });
}

/**
 * `fabric-agent enroll`: makes a key here (it never leaves this host), joins with the token, waits for an
 * admin's decision while showing progress, and stores the issued identity in the state directory.
 */
export async function enroll(options: EnrollOptions): Promise<NodeRecord> {
  const { paths, config, out } = options;
  ensureStateDir(paths);
  refuseIfEnrolled(paths, options.force);
  // Past this point any identity still here is expired or being replaced on purpose (--force).
  forgetIdentity(paths);
  if (options.force) forgetPending(paths);
  const client = createRpcClient(EnrollmentService, {
    url: config.enrollmentUrl,
    credentials: { caBundlePem: options.caBundlePem },
    ...(config.trustDomain
      ? {
          expectServerId: buildSpiffeId({
            trustDomain: config.trustDomain,
            kind: "service",
            id: "enrollment",
          }),
        }
      : {}),
    // Join spends a token use: never resend it on our own.
    retries: 0,
  });

  let pending = readPending(paths, config.enrollmentUrl);
  const keyPath = join(paths.pendingKeyDir, "key.pem");
  let privateKeyPem: string;
  if (pending) {
    privateKeyPem = readFileSync(keyPath, "utf8");
    out.write(`Resuming enrollment: join request ${pending.joinRequestId} is still awaiting a decision.\n`);
  } else {
    if (!options.token) {
      throw new AgentExit(
        EXIT.USAGE,
        "enroll needs a join token: --token <id.secret> (or FABRIC_JOIN_TOKEN)",
      );
    }
    const key = generateP256KeyPair();
    privateKeyPem = key.privateKeyPem;
    mkdirSync(paths.pendingKeyDir, { recursive: true, mode: 0o700 });
    writeFileAtomic(keyPath, privateKeyPem, 0o600);
    out.write(`Generated an ECDSA P-256 key in ${paths.pendingKeyDir} (it never leaves this host).\n`);
    out.write(`Public key SHA-256: ${publicKeyFingerprint(key.publicKeyPem)}\n`);
    const res = await client
      .join(
        create(EnrollmentServiceJoinRequestSchema, {
          token: options.token,
          csrPem: await buildCsr(privateKeyPem, config.nodeName ?? "node"),
          nodeName: config.nodeName ?? "",
          facts: hostFacts(config),
          capabilities: config.capabilities,
          requestedRoles: config.roles,
          clusterId: config.clusterId ?? "",
        }),
      )
      .catch((err: unknown) => {
        throw joinFailure(err, config.enrollmentUrl);
      });
    pending = {
      joinRequestId: res.joinRequestId,
      challenge: Buffer.from(res.challenge).toString("base64"),
      enrollmentUrl: config.enrollmentUrl,
      expiresAt: res.expiresAt ? timestampDate(res.expiresAt).toISOString() : "",
    };
    writeFileAtomic(paths.pendingEnrollment, `${JSON.stringify(pending, null, 2)}\n`, 0o600);
    out.write(`Join request ${res.joinRequestId} created.\n`);
  }
  out.write(
    `An admin approves it with: fabric join approve ${pending.joinRequestId}` +
      ` (compare the public key SHA-256 above with the request's)\n`,
  );

  const approved = await waitForApproval(client, pending, privateKeyPem, options);
  return store(paths, approved, privateKeyPem, options);
}

/** Refuses to replace a still-valid identity unless forced (an expired one may be replaced freely). */
export function refuseIfEnrolled(paths: AgentPaths, force: boolean): void {
  if (force || !hasIdentity(paths)) return;
  const facts = inspectCertificate(loadCurrentIdentity(paths).certificatePem);
  if (facts.notAfter <= new Date()) return;
  throw new AgentExit(
    EXIT.USAGE,
    `this host is already enrolled as ${facts.spiffeId} (certificate valid until ${facts.notAfter.toISOString()}). ` +
      "Use --force to discard that identity and enroll again.",
  );
}

function readPending(paths: AgentPaths, enrollmentUrl: string): PendingEnrollment | undefined {
  if (!existsSync(paths.pendingEnrollment) || !existsSync(join(paths.pendingKeyDir, "key.pem")))
    return undefined;
  const pending = JSON.parse(readFileSync(paths.pendingEnrollment, "utf8")) as PendingEnrollment;
  const expired = pending.expiresAt !== "" && Date.parse(pending.expiresAt) <= Date.now();
  if (pending.enrollmentUrl !== enrollmentUrl || expired) {
    forgetPending(paths);
    return undefined;
  }
  return pending;
}

function forgetPending(paths: AgentPaths): void {
  rmSync(paths.pendingEnrollment, { force: true });
  rmSync(paths.pendingKeyDir, { recursive: true, force: true });
}

function joinFailure(err: unknown, url: string): AgentExit {
  const e = ConnectError.from(err);
  switch (e.code) {
    case Code.Unauthenticated:
      return new AgentExit(EXIT.ENROLLMENT_REFUSED, `the join token was not accepted: ${e.rawMessage}`);
    case Code.FailedPrecondition:
    case Code.InvalidArgument:
    case Code.PermissionDenied:
    case Code.ResourceExhausted:
      return new AgentExit(EXIT.ENROLLMENT_REFUSED, `enrollment refused the join: ${e.rawMessage}`);
    default:
      return new AgentExit(EXIT.FAILURE, `cannot join through ${url}: ${e.rawMessage}`);
  }
}

type Approved = WaitForApprovalResponse & { state: JoinRequestState.APPROVED };

/** Follows WaitForApproval until a final state, reconnecting (the server repeats the state) on drops. */
async function waitForApproval(
  client: ReturnType<typeof createRpcClient<typeof EnrollmentService>>,
  pending: PendingEnrollment,
  privateKeyPem: string,
  options: EnrollOptions,
): Promise<Approved> {
  const signature = approvalSignature(
    privateKeyPem,
    pending.joinRequestId,
    Buffer.from(pending.challenge, "base64"),
  );
  let state = "PENDING";
  let connection = "";
  const progress = new ProgressLine(
    options.out,
    (elapsed) =>
      `Waiting for approval of join request ${pending.joinRequestId}: ${state}, ${elapsed} elapsed${connection}`,
    options.config.progressIntervalMs,
  );
  progress.start();
  const backoff = new Backoff(options.config.reconnectBaseMs, options.config.reconnectMaxMs);
  try {
    for (;;) {
      try {
        for await (const res of client.waitForApproval(
          create(WaitForApprovalRequestSchema, { joinRequestId: pending.joinRequestId, signature }),
          { timeoutMs: 0 },
        )) {
          backoff.reset();
          connection = "";
          switch (res.state) {
            case JoinRequestState.APPROVED:
              progress.stop(`Join request ${pending.joinRequestId} approved.`);
              return res as Approved;
            case JoinRequestState.REJECTED:
              forgetPending(options.paths);
              progress.stop();
              throw new AgentExit(
                EXIT.ENROLLMENT_REFUSED,
                `join request ${pending.joinRequestId} was rejected: ${res.rejectionReason || "no reason given"}`,
              );
            case JoinRequestState.EXPIRED:
              forgetPending(options.paths);
              progress.stop();
              throw new AgentExit(
                EXIT.ENROLLMENT_REFUSED,
                `join request ${pending.joinRequestId} expired before anyone decided; enroll again with a new token`,
              );
            default:
              state = JoinRequestState[res.state] ?? "PENDING";
          }
        }
      } catch (err) {
        if (err instanceof AgentExit) throw err;
        const e = ConnectError.from(err);
        if (e.code === Code.Unauthenticated || e.code === Code.NotFound || e.code === Code.InvalidArgument) {
          forgetPending(options.paths);
          progress.stop();
          throw new AgentExit(EXIT.ENROLLMENT_REFUSED, `waiting for approval failed: ${e.rawMessage}`);
        }
        connection = ` (connection lost: ${e.rawMessage}; retrying)`;
      }
      await sleep(backoff.next());
    }
  } finally {
    progress.stop();
  }
}

function store(paths: AgentPaths, res: Approved, privateKeyPem: string, options: EnrollOptions): NodeRecord {
  const chainPem = res.chainPem.flatMap(splitCertificates);
  const facts = inspectCertificate(res.certificatePem);
  const certKey = createPublicKey(res.certificatePem).export({ type: "spki", format: "der" });
  const ourKey = createPublicKey(privateKeyPem).export({ type: "spki", format: "der" });
  if (!certKey.equals(ourKey)) {
    throw new AgentExit(EXIT.FAILURE, "the issued certificate is not for this host's key; refusing it");
  }
  if (!verifyChain(res.certificatePem, chainPem, options.caBundlePem)) {
    throw new AgentExit(
      EXIT.FAILURE,
      "the issued certificate does not chain to the CA bundle given with --ca-bundle",
    );
  }
  const identity = facts.identity;
  if (!identity || identity.kind !== "node" || !identity.cluster) {
    throw new AgentExit(
      EXIT.FAILURE,
      `the issued certificate is not a node identity (${facts.spiffeId ?? "no SPIFFE ID"})`,
    );
  }
  // The returned bundle replaces ours only if it also vouches for the new certificate.
  const bundle =
    res.caBundlePem && verifyChain(res.certificatePem, chainPem, res.caBundlePem)
      ? res.caBundlePem
      : options.caBundlePem;
  installIdentity(paths, {
    privateKeyPem,
    certificatePem: res.certificatePem,
    chainPem,
    caBundlePem: bundle,
  });
  const record: NodeRecord = {
    nodeId: identity.id,
    clusterId: identity.cluster,
    trustDomain: identity.trustDomain,
    spiffeId: facts.spiffeId!,
    grantedRoles: res.grantedRoles,
    endpoints: {
      enrollmentUrl: options.config.enrollmentUrl,
      ...(options.config.registryUrl ? { registryUrl: options.config.registryUrl } : {}),
      ...(options.config.routerUrl ? { routerUrl: options.config.routerUrl } : {}),
    },
    enrolledAt: new Date().toISOString(),
  };
  writeNodeRecord(paths, record);
  forgetPending(paths);
  options.out.write(
    `Enrolled as node ${record.nodeId} in cluster ${record.clusterId} (${record.spiffeId}).\n` +
      `Roles granted: ${record.grantedRoles.join(", ") || "none"}. Certificate valid until ${facts.notAfter.toISOString()}.\n` +
      `Identity stored in ${paths.identity}. Start the agent with: fabric-agent run\n`,
  );
  return record;
}
