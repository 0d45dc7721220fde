// Hosts enrolling the way fabric-agent does (a key made on the host, Join with a token, WaitForApproval
// proving possession of the key), retrying through outages as an operator's supervisor would. Used by the
// fault suite and by the enrollment-storm bench.
import { createHash, createPublicKey } from "node:crypto";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { buildCsr, generateP256KeyPair } from "@fabric/platform";
import type { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { JoinRequestState } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { signWaitForApproval } from "../../../services/enrollment/src/protocol.js";

export interface StormHost {
  index: number;
  privateKeyPem: string;
  csrPem: string;
  /** SHA-256 of the key's SubjectPublicKeyInfo, as enrollment records it on the join request. */
  publicKeySha256: string;
  /**
   * Join calls that failed without an answer and were sent again. Each may or may not have created a
   * join request before the connection broke: Join has no idempotency key.
   */
  unansweredJoins: number;
  /** Failures seen on the way, by code, e.g. { Unavailable: 3 }. */
  failures: Record<string, number>;
  /** The last failure, for the message when the host gives up. */
  lastFailure?: string;
  /** When the host got its identity (epoch ms). */
  enrolledAt?: number;
  identity?: {
    nodeId: string;
    joinRequestId: string;
    certificatePem: string;
    chainPem: string[];
    caBundlePem: string;
    notAfter?: Date;
  };
}

export async function makeHosts(count: number): Promise<StormHost[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, index) => {
      const key = generateP256KeyPair();
      const spki = createPublicKey(key.publicKeyPem).export({ type: "spki", format: "der" });
      return {
        index,
        privateKeyPem: key.privateKeyPem,
        csrPem: await buildCsr(key.privateKeyPem, `host-${index}`),
        publicKeySha256: createHash("sha256").update(spki).digest("hex"),
        unansweredJoins: 0,
        failures: {},
      };
    }),
  );
}

// What a supervisor retries: the service or its dependencies are away, or the call was cut.
const RETRYABLE = new Set([
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.Canceled,
  Code.Aborted,
  Code.Internal,
  Code.Unknown,
  Code.ResourceExhausted,
]);

function retryable(host: StormHost, err: unknown): ConnectError {
  const error = ConnectError.from(err);
  host.failures[Code[error.code]] = (host.failures[Code[error.code]] ?? 0) + 1;
  host.lastFailure = `${Code[error.code]}: ${error.rawMessage}`;
  if (!RETRYABLE.has(error.code)) throw error;
  return error;
}

const pause = (attempt: number) =>
  new Promise((r) => setTimeout(r, Math.random() * Math.min(2_000, 100 * 2 ** Math.min(attempt, 5))));

/**
 * Enrolls one host with an auto-approving token: Join (sent again only when it got no answer), then
 * WaitForApproval until APPROVED, reconnecting as often as needed before `deadline` (epoch ms).
 */
export async function enrollHost(
  client: Client<typeof EnrollmentService>,
  token: string,
  host: StormHost,
  deadline: number,
  init: { clusterId: string; capabilities: string[] },
): Promise<void> {
  let joined: { id: string; challenge: Uint8Array } | undefined;
  for (let attempt = 0; !joined; attempt++) {
    if (Date.now() > deadline)
      throw new Error(
        `host ${host.index}: Join did not succeed before the deadline (last: ${host.lastFailure})`,
      );
    try {
      const res = await client.join(
        {
          token,
          csrPem: host.csrPem,
          nodeName: `host-${host.index}`,
          clusterId: init.clusterId,
          capabilities: init.capabilities,
          facts: { hostname: `host-${host.index}`, os: "linux", arch: "x64", agentVersion: "1.0.0" },
        },
        { timeoutMs: 20_000 },
      );
      joined = { id: res.joinRequestId, challenge: res.challenge };
    } catch (err) {
      const error = retryable(host, err);
      // A refused connection never reached the server; anything else may have been committed.
      if (!/ECONNREFUSED/.test(error.rawMessage)) host.unansweredJoins += 1;
      await pause(attempt);
    }
  }
  const signature = signWaitForApproval(host.privateKeyPem, joined.id, joined.challenge);
  for (let attempt = 0; !host.identity; attempt++) {
    if (Date.now() > deadline)
      throw new Error(`host ${host.index}: not approved before the deadline (last: ${host.lastFailure})`);
    try {
      for await (const res of client.waitForApproval(
        { joinRequestId: joined.id, signature },
        { timeoutMs: 30_000 },
      )) {
        if (res.state === JoinRequestState.APPROVED) {
          host.identity = {
            nodeId: res.nodeId,
            joinRequestId: joined.id,
            certificatePem: res.certificatePem,
            chainPem: res.chainPem,
            caBundlePem: res.caBundlePem,
            ...(res.notAfter ? { notAfter: timestampDate(res.notAfter) } : {}),
          };
          host.enrolledAt = Date.now();
        } else if (res.state !== JoinRequestState.PENDING) {
          throw new Error(
            `host ${host.index}: join request ${joined.id} ended ${JoinRequestState[res.state]}`,
          );
        }
      }
    } catch (err) {
      if (!(err instanceof ConnectError) && err instanceof Error) throw err;
      retryable(host, err);
    }
    if (!host.identity) await pause(attempt);
  }
}
