import { CsrError, invalidArgument, isValidPrincipalId, verifyCsr, type VerifiedCsr } from "@fabric/platform";
import { durationMs, type Duration } from "@bufbuild/protobuf/wkt";
import type { NodeFacts } from "@fabric/proto/fabric/common/v1/common_pb.js";

// Name rules shared with the registry's contracts (clusters, organizations and roles: a letter, then
// `[a-z0-9-]`, 1-63 characters).
const CATALOG_NAME = /^[a-z][a-z0-9-]{0,62}$/;
const CAPABILITY = /^can_[a-z0-9_]{1,60}$/;
const NODE_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
const DEVELOPER_ID = /^[a-z0-9][a-z0-9-]{0,63}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MAX_CSR_BYTES = 16 * 1024;
const OS_FAMILIES = new Set(["linux", "darwin", "windows"]);
/**
 * Characters that make a terminal or a text renderer do something instead of showing text: C0 (ESC among
 * them), DEL and C1 controls, the bidirectional marks, embeddings, overrides and isolates (which reorder
 * what is shown: "Trojan Source"), and the Unicode line and paragraph separators.
 */
const CONTROL = /[\p{Cc}\u061C\u200E\u200F\u2028\u2029\u202A-\u202E\u2066-\u2069]/u;
// PEM is text too, but its lines end in CR LF or LF.
const CONTROL_EXCEPT_LINE_ENDS =
  /(?![\r\n])[\p{Cc}\u061C\u200E\u200F\u2028\u2029\u202A-\u202E\u2066-\u2069]/u;

/**
 * Refuses text that carries control characters. Whatever a joiner, a developer or an admin sends ends up
 * on someone else's screen (`fabric join ls`, audit listings, the waiting agent's log): an escape sequence
 * there could rewrite what the reviewer sees. The message names the field and the code point, never the
 * value.
 */
export function plainText(value: string, field: string, control = CONTROL): string {
  const found = control.exec(value);
  if (found) {
    const codePoint = found[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
    throw invalidArgument(
      `${field} contains a control character (U+${codePoint}); send plain text without control, escape or bidirectional characters`,
    );
  }
  return value;
}

export function requireClusterId(value: string, field = "cluster_id"): string {
  if (!value) throw invalidArgument(`${field} is required`);
  if (!CATALOG_NAME.test(value))
    throw invalidArgument(`${field} must be 1-63 characters of [a-z0-9-] starting with a letter`);
  return value;
}

export function optionalOrganizationId(value: string): string {
  if (value && !CATALOG_NAME.test(value))
    throw invalidArgument("organization_id must be 1-63 characters of [a-z0-9-] starting with a letter");
  return value;
}

/** Role names: unique, each a catalog name; at most 32 (they end up in the certificate's grant). */
export function roleList(values: string[], field: string): string[] {
  const roles = [...new Set(values)];
  if (roles.length > 32) throw invalidArgument(`${field} may hold at most 32 roles`);
  for (const role of roles) {
    if (!CATALOG_NAME.test(role))
      throw invalidArgument(`${field}: "${role}" is not a role name ([a-z0-9-], starting with a letter)`);
  }
  return roles;
}

export function capabilityList(values: string[]): string[] {
  const capabilities = [...new Set(values)];
  if (capabilities.length > 64) throw invalidArgument("capabilities may hold at most 64 entries");
  for (const c of capabilities) {
    if (!CAPABILITY.test(c))
      throw invalidArgument(
        `capabilities: "${c}" is not a capability name (lower snake case starting with "can_")`,
      );
  }
  return capabilities;
}

export function requireDeveloperId(value: string): string {
  if (!value) throw invalidArgument("developer_id is required");
  if (!DEVELOPER_ID.test(value))
    throw invalidArgument(
      "developer_id must be 1-64 characters of [a-z0-9-], starting with a letter or digit",
    );
  return value;
}

export function requireJoinRequestId(value: string): string {
  if (!value) throw invalidArgument("join_request_id is required");
  if (!UUID.test(value)) throw invalidArgument("join_request_id is not a join request id (a UUID from Join)");
  return value;
}

export function optionalNodeId(value: string): string {
  if (value && !isValidPrincipalId(value))
    throw invalidArgument(
      "node_id must be 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit",
    );
  return value;
}

/** The node name asked for, or one derived from the host name when empty. */
export function nodeNameFor(requested: string, hostname: string): string {
  if (requested) {
    if (!NODE_NAME.test(requested))
      throw invalidArgument(
        "node_name must be 1-63 characters of [a-z0-9-], starting with a letter or digit",
      );
    return requested;
  }
  const derived = hostname
    .toLowerCase()
    .split(".")[0]!
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 63)
    .replace(/-+$/, "");
  return derived || "node";
}

export function checkFacts(facts: NodeFacts | undefined): void {
  if (!facts) return;
  if (facts.hostname.length > 253) throw invalidArgument("facts.hostname may be at most 253 characters");
  plainText(facts.hostname, "facts.hostname");
  if (facts.os && !OS_FAMILIES.has(facts.os))
    throw invalidArgument("facts.os must be linux, darwin or windows (lower case)");
  for (const [field, value] of [
    ["os_version", facts.osVersion],
    ["arch", facts.arch],
    ["agent_version", facts.agentVersion],
    ["region", facts.region],
  ] as const) {
    if (value.length > 128) throw invalidArgument(`facts.${field} may be at most 128 characters`);
    plainText(value, `facts.${field}`);
  }
  if (facts.addresses.length > 32) throw invalidArgument("facts.addresses may hold at most 32 entries");
  if (facts.addresses.some((a) => a.length > 261))
    throw invalidArgument("facts.addresses entries must be host:port, at most 261 characters");
  for (const address of facts.addresses) plainText(address, "facts.addresses");
  const labels = Object.entries(facts.labels);
  if (labels.length > 64) throw invalidArgument("facts.labels may hold at most 64 entries");
  for (const [k, v] of labels) {
    if (k.length === 0 || k.length > 63) throw invalidArgument("facts.labels keys must be 1-63 characters");
    // The key is checked first: the value's message names it.
    plainText(k, "facts.labels keys");
    if (v.length > 255) throw invalidArgument(`facts.labels["${k}"] may be at most 255 characters`);
    plainText(v, `facts.labels["${k}"]`);
  }
}

/** Parses and verifies a CSR (P-256, self-signature = proof of possession); InvalidArgument otherwise. */
export async function checkCsr(csrPem: string): Promise<VerifiedCsr> {
  if (!csrPem) throw invalidArgument("csr_pem is required: a PEM PKCS#10 request for your P-256 key");
  if (Buffer.byteLength(csrPem, "utf8") > MAX_CSR_BYTES)
    throw invalidArgument("csr_pem may be at most 16 KiB");
  plainText(csrPem, "csr_pem", CONTROL_EXCEPT_LINE_ENDS);
  try {
    return await verifyCsr(csrPem);
  } catch (err) {
    if (err instanceof CsrError) throw invalidArgument(err.message);
    throw err;
  }
}

/** A text field limited in length, without control characters. */
export function boundedText(value: string, field: string, max: number): string {
  if (value.length > max) throw invalidArgument(`${field} may be at most ${max} characters`);
  return plainText(value, field);
}

/** A protobuf Duration in milliseconds; unset = 0. Negative durations are refused. */
export function durationField(value: Duration | undefined, field: string): number {
  if (!value) return 0;
  const ms = durationMs(value);
  if (ms < 0) throw invalidArgument(`${field} must not be negative`);
  return ms;
}
