import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";
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
    ...(rule.kinds ?? []).map((k) => `${k} principals`),
    ...(rule.services ?? []).map((s) => `the ${s} service`),
    ...(rule.adminRoles ?? []).map((r) => r),
  ];
  return parts.length ? parts.join(", ") : "nobody";
}

/**
 * The one authorization interceptor (default deny): authenticates the peer, refuses revoked identities,
 * applies the service's table, and cuts a streaming call the moment its caller's certificate is revoked.
 */
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

export function authorizationInterceptor(
  bindings: PolicyBinding[],
  revocations: RevocationSet,
  onRefusal: (refusal: AuthorizationRefusal) => void = () => {},
): Interceptor {
  const tables = new Map(bindings.map((b) => [b.service.typeName, b.policy]));
  return (next) => async (req) => {
    const rule = tables.get(req.service.typeName)?.[req.method.localName];
    const rpc = `${req.service.typeName}/${req.method.name}`;
    const refuse = (reason: string, code: Code, principal?: Principal) => {
      onRefusal({ rpc, code, reason, principal, address: req.contextValues.get(kRemoteAddress) });
      return new ConnectError(reason, code);
    };
    if (!rule) throw refuse(`${rpc} has no authorization rule; refusing by default`, Code.PermissionDenied);
    if (rule.anonymous) return next(req);
    const peer = req.contextValues.get(kPeer);
    if (peer.state === "none") {
      throw refuse(
        `${rpc} needs a client certificate issued by this fabric's CA; enroll first or pass your identity`,
        Code.Unauthenticated,
      );
    }
    if (peer.state === "rejected") throw refuse(peer.reason, Code.Unauthenticated);
    const principal = peer.principal;
    if (revocations.isRevoked(principal)) {
      throw refuse(
        `certificate ${principal.serialHex} of ${principal.kind} "${principal.id}" has been revoked; re-enroll to get a new identity`,
        Code.Unauthenticated,
        principal,
      );
    }
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
    const res = await next(req);
    if (!res.stream) return res;
    return { ...res, message: cutOnRevocation(res.message, principal, revocations) };
  };
}

/** Wraps a response stream so it ends with Unauthenticated as soon as the caller's serial is revoked. */
async function* cutOnRevocation<T>(
  messages: AsyncIterable<T>,
  principal: Principal,
  revocations: RevocationSet,
): AsyncGenerator<T> {
  // A fresh promise per wait: racing every message against one long-lived promise would leave a reaction
  // on it per message for the whole life of the stream.
  let isRevoked = false;
  let wake: (() => void) | undefined;
  const unwatch = revocations.watch(principal, () => {
    isRevoked = true;
    wake?.();
  });
  const iterator = messages[Symbol.asyncIterator]();
  try {
    for (;;) {
      const revokedSignal = new Promise<"revoked">((resolve) => {
        wake = () => resolve("revoked");
        if (isRevoked) wake();
      });
      const step = await Promise.race([iterator.next(), revokedSignal]);
      wake = undefined;
      if (step === "revoked") {
        throw new ConnectError(
          `certificate ${principal.serialHex} was revoked; this stream is closed. Re-enroll to get a new identity`,
          Code.Unauthenticated,
        );
      }
      if (step.done) return;
      yield step.value;
    }
  } finally {
    unwatch();
    void iterator.return?.();
  }
}
