// The attack matrix across the tenant boundary: for every RPC a valid request of the attacker's own side
// (a template), and every id field found in its request descriptor, a variant naming the victim's object
// instead. Id fields are found by walking the descriptors, so a new RPC or a new id field is attacked
// without anyone remembering to add it — and a field that looks like an id but is not mapped here fails
// the suite until someone says what it names.
import {
  ScalarType,
  clone,
  create,
  type DescField,
  type DescMessage,
  type DescMethod,
} from "@bufbuild/protobuf";
import type { Side } from "./tenant-world.js";

/** Which object of a side an id field names. */
export type IdKind =
  | "cluster"
  | "org"
  | "node"
  | "nodeGroup"
  | "membership"
  | "assignment"
  | "workload"
  | "pool"
  | "tokenId"
  | "token"
  | "joinRequest"
  | "developer"
  | "serial";

// By `<message type>.<field>` first, then by field name alone.
const ID_FIELDS: Record<string, IdKind> = {
  "fabric.common.v1.WorkloadSpec.id": "workload",
  "fabric.common.v1.Principal.id": "node",
  cluster_id: "cluster",
  default_cluster_id: "cluster",
  cluster_ids: "cluster",
  organization_id: "org",
  organization_ids: "org",
  node_id: "node",
  node_ids: "node",
  peer_node_id: "node",
  principal_id: "node",
  // Audit filters: an event about the victim's node must not reach the attacker through them.
  actor_id: "node",
  target_id: "node",
  node_group_id: "nodeGroup",
  parent_group_id: "nodeGroup",
  membership_id: "membership",
  role_assignment_id: "assignment",
  workload_id: "workload",
  egress_pool_id: "pool",
  token_id: "tokenId",
  token: "token",
  join_request_id: "joinRequest",
  developer_id: "developer",
  serial: "serial",
  certificate_serial: "serial",
};

const LOOKS_LIKE_ID = /(^id|_id|_ids|serial)$|^token$/;

/** One place in a request that names an object: the field path from the request message down. */
export interface IdSlot {
  path: DescField[];
  kind: IdKind;
  /** e.g. `spec.node_ids`. */
  name: string;
}

function isString(f: DescField): boolean {
  return (
    (f.fieldKind === "scalar" && f.scalar === ScalarType.STRING) ||
    (f.fieldKind === "list" && f.listKind === "scalar" && f.scalar === ScalarType.STRING)
  );
}

/** Every id slot of a request message; `unmapped` collects id-looking fields nobody mapped. */
export function idSlots(message: DescMessage, unmapped: Set<string>, prefix: DescField[] = []): IdSlot[] {
  const slots: IdSlot[] = [];
  for (const f of message.fields) {
    const path = [...prefix, f];
    if (isString(f)) {
      const kind = ID_FIELDS[`${message.typeName}.${f.name}`] ?? ID_FIELDS[f.name];
      if (kind) slots.push({ path, kind, name: path.map((p) => p.name).join(".") });
      else if (LOOKS_LIKE_ID.test(f.name)) unmapped.add(`${message.typeName}.${f.name}`);
    } else if (f.fieldKind === "message" && !f.message.typeName.startsWith("google.") && prefix.length < 3) {
      slots.push(...idSlots(f.message, unmapped, path));
    }
  }
  return slots;
}

/** The value an attacker puts in a slot to name the victim's object. */
export function victimValue(kind: IdKind, home: Side, victim: Side): string {
  // A join token is a credential: the attacker knows the victim token's id, not its secret.
  if (kind === "token") return `${victim.tokenId}.${home.token.split(".")[1]}`;
  return victim[kind];
}

type Plain = Record<string, unknown>;

/**
 * The request with `slot` set to `value`, or undefined when the template does not use the oneof member
 * the slot lies in (another template of the same RPC covers it).
 */
export function withSlot(
  method: DescMethod,
  template: Plain,
  slot: IdSlot,
  value: string,
): Plain | undefined {
  const request = clone(method.input, create(method.input, template)) as unknown as Plain;
  let at: Plain = request;
  for (const [i, f] of slot.path.entries()) {
    const last = i === slot.path.length - 1;
    const fieldValue = f.fieldKind === "list" ? [value] : value;
    if (f.oneof) {
      const chosen = at[f.oneof.localName] as { case?: string; value?: unknown };
      if (chosen.case !== f.localName) return undefined;
      if (last) chosen.value = fieldValue;
      else at = chosen.value as Plain;
    } else if (last) {
      at[f.localName] = fieldValue;
    } else {
      if (at[f.localName] === undefined && f.fieldKind === "message") at[f.localName] = create(f.message);
      at = at[f.localName] as Plain;
    }
  }
  return request;
}
