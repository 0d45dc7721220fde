import { create } from "@bufbuild/protobuf";
import { timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  PrincipalKind,
  PrincipalSchema,
  type Principal as PrincipalRef,
} from "@fabric/proto/fabric/common/v1/common_pb.js";
import { MembershipState, NodeState } from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import type { Principal } from "@fabric/platform";

/** Conversions between database values, platform principals and contract messages. */

export const ts = (d: Date | null | undefined): Timestamp | undefined =>
  d ? timestampFromDate(d) : undefined;

const KINDS: Record<string, PrincipalKind> = {
  node: PrincipalKind.NODE,
  service: PrincipalKind.SERVICE,
  user: PrincipalKind.USER,
  admin: PrincipalKind.ADMIN,
};

/** A principal reference from a stored kind name and id; unset when nothing was stored. */
export function principalRef(kind: string, id: string): PrincipalRef | undefined {
  if (!id) return undefined;
  return create(PrincipalSchema, { kind: KINDS[kind] ?? PrincipalKind.UNSPECIFIED, id });
}

export const kindName = (kind: PrincipalKind): string =>
  Object.entries(KINDS).find(([, v]) => v === kind)?.[0] ?? "unknown";

export function callerRef(caller: Principal): PrincipalRef {
  return create(PrincipalSchema, { kind: KINDS[caller.kind]!, id: caller.id });
}

export const MEMBERSHIP_STATES: Record<string, MembershipState> = {
  active: MembershipState.ACTIVE,
  disabled: MembershipState.DISABLED,
  revoked: MembershipState.REVOKED,
};

export const NODE_STATES: Record<string, NodeState> = {
  active: NodeState.ACTIVE,
  revoked: NodeState.REVOKED,
};

export const labelsOf = (value: unknown): Record<string, string> => (value ?? {}) as Record<string, string>;
