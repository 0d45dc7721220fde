import { Code, ConnectError, type Interceptor, type StreamRequest } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";
import { systemClock, type Clock } from "./clock.js";
import { GuardSweeper, IdentityGuard, identityProblem, STREAM_RECHECK_MS } from "./identity-validity.js";
import type { AdminRole, ServiceName } from "./pki/principal-kinds.js";
import { kPeer, type Principal } from "./principal.js";
import { kRemoteAddress } from "./remote-address.js";
import type { RevocationSet } from "./revocation.js";

/**
 * Who may call one RPC. A caller passes when any clause matches; an empty rule matches nobody.
 * `anonymous` RPCs are the only ones reachable without a verified client certificate.
 */
export interface Rule {
  anonymous?: true;
  /** Any caller with a valid certificate from this fabric's CA, whatever its kind. */
  authenticated?: true;
  /** Any node, or any developer (user) principal. */
  kinds?: ("node" | "user")[];
  /** These service identities. */
  services?: ServiceName[];
  /** Admins holding one of these roles (scoping to a cluster or org is the handler's job). */
  adminRoles?: AdminRole[];
}

/** One declarative table per service: every method must be listed, so a new RPC cannot be forgotten. */
export type Policy<S extends DescService> = { readonly [M in keyof S["method"]]: Rule };

export interface PolicyBinding {
  service: DescService;
  policy: Record<string, Rule>;
}

export function allows(rule: Rule, principal: Principal): boolean {
  if (rule.authenticated) return true;
  switch (principal.kind) {
    case "node":
    case "user":
      return rule.kinds?.includes(principal.kind) ?? false;
    case "service":
      return rule.services?.includes(principal.id as ServiceName) ?? false;
    case "admin":
      return principal.adminRole !== undefined && (rule.adminRoles?.includes(principal.adminRole) ?? false);
  }
}

function describeRule(rule: Rule): string {
  const parts = [
    ...(rule.authenticated ? ["any enrolled identity"] : []),
    ...(rule.kinds ?? []).map((k) => `${k} principals`),
    ...(rule.services ?? []).map((s) => `the ${s} service`),
    ...(rule.adminRoles ?? []).map((r) => r),
  ];
  return parts.length ? parts.join(", ") : "nobody";
}

/** A call the authorization interceptor refused: what the service's audit log records of it. */
export interface AuthorizationRefusal {
  /** e.g. fabric.ca.v1.CaService/Sign */
  rpc: string;
  code: Code;
  reason: string;
  /** Undefined when the caller presented no usable certificate. */
  principal: Principal | undefined;
  /** ip:port of the caller. */
  address: string;
}

export interface AuthorizationOptions {
  revocations: RevocationSet;
  /** Told of every refused call (the service audits them); must not block. */
  onRefusal?: (refusal: AuthorizationRefusal) => void;
  clock?: Clock;
  /** Periodic re-check of open streams (default STREAM_RECHECK_MS). */
  streamRecheckMs?: number;
}

/**
 * The one authorization interceptor (default deny): authenticates the peer, refuses identities that are
 * expired, not yet valid or revoked at the time of the call, applies the service's table, and keeps
 * checking for as long as a streaming call lasts: the call ends with Unauthenticated at the first instant
 * past its certificate's notAfter, the moment it is revoked, and at the latest STREAM_RECHECK_MS after a
 * clock step made it invalid; every request message of a client or bidi stream is checked as it arrives.
 */
export function authorizationInterceptor(
  bindings: PolicyBinding[],
  options: AuthorizationOptions,
): Interceptor {
  const tables = new Map(bindings.map((b) => [b.service.typeName, b.policy]));
  const { revocations } = options;
  const onRefusal = options.onRefusal ?? (() => {});
  const clock = options.clock ?? systemClock;
  const sweeper = new GuardSweeper(clock, options.streamRecheckMs ?? STREAM_RECHECK_MS);
  return (next) => async (req) => {
    const rule = tables.get(req.service.typeName)?.[req.method.localName];
    const rpc = `${req.service.typeName}/${req.method.name}`;
    const refuse = (reason: string, code: Code, principal?: Principal) => {
      onRefusal({ rpc, code, reason, principal, address: req.contextValues.get(kRemoteAddress) });
      return new ConnectError(reason, code);
    };
    if (!rule) throw refuse(`${rpc} has no authorization rule; refusing by default`, Code.PermissionDenied);
    const peer = req.contextValues.get(kPeer);
    if (rule.anonymous) {
      // The call goes ahead as anonymous, but a handler must never see a principal that is no longer
      // valid: the peer is withdrawn for this call.
      if (peer.state === "verified") {
        const problem = identityProblem(peer.principal, revocations, clock.now());
        if (problem) req.contextValues.set(kPeer, { state: "rejected", reason: problem });
      }
      return next(req);
    }
    if (peer.state === "none") {
      throw refuse(
        `${rpc} needs a client certificate issued by this fabric's CA; enroll first or pass your identity`,
        Code.Unauthenticated,
      );
    }
    if (peer.state === "rejected") throw refuse(peer.reason, Code.Unauthenticated);
    const principal = peer.principal;
    const problem = identityProblem(principal, revocations, clock.now());
    if (problem) throw refuse(problem, Code.Unauthenticated, principal);
    if (!allows(rule, principal)) {
      const who =
        principal.kind === "admin"
          ? `admin "${principal.id}" (${principal.adminRole})`
          : `${principal.kind} "${principal.id}"`;
      throw refuse(
        `${who} may not call ${rpc}; it is open to: ${describeRule(rule)}`,
        Code.PermissionDenied,
        principal,
      );
    }
    if (!req.stream) return next(req);

    const guard = new IdentityGuard(principal, revocations, clock, sweeper);
    // The call's signal aborts when it ends however it ends, even if its response is never read.
    req.signal.addEventListener("abort", () => guard.dispose(), { once: true });
    let res;
    try {
      res = await next({ ...req, message: checkedMessages(req, guard, false) } as StreamRequest);
    } catch (err) {
      guard.dispose();
      throw err;
    }
    if (!res.stream) {
      // A client stream: its answer must not go out if the identity failed while the handler ran.
      guard.dispose();
      guard.check();
      return res;
    }
    return { ...res, message: checkedMessages(res, guard, true) };
  };
}

/**
 * Hands on a stream's messages (requests as the handler reads them, or responses as they are sent) for
 * as long as the guard holds, checking the identity again at each one. A stream waiting for its next
 * message ends with the guard's Unauthenticated the moment the guard fails. The response stream's end is
 * the call's end, so it releases the guard (`endsCall`); the end of the requests is only a half-close.
 */
async function* checkedMessages<T>(
  stream: { message: AsyncIterable<T> },
  guard: IdentityGuard,
  endsCall: boolean,
): AsyncGenerator<T> {
  const iterator = stream.message[Symbol.asyncIterator]();
  try {
    for (;;) {
      const step = await guard.race(iterator.next());
      if (step.done) return;
      guard.check();
      yield step.value;
    }
  } finally {
    if (endsCall) guard.dispose();
    void iterator.return?.();
  }
}
