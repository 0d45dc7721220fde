import {
  decodePageToken,
  encodePageToken,
  invalidArgument,
  listCluster,
  pageSize,
  type Principal,
} from "@fabric/platform";
import type { Enrollment } from "./context.js";

/** What ListJoinTokens and ListJoinRequests ask for: a cluster, a state, a page. */
export interface ClusterPageRequest {
  clusterId: string;
  state: number;
  pageSize: number;
  pageToken: string;
}

/** A table of cluster-scoped rows listed newest first, and the SQL condition of each state filter. */
export interface ClusterListing {
  rpc: string;
  table: string;
  columns: string;
  /** e.g. "join token", for the error naming an unknown state. */
  noun: string;
  stateFilters: Partial<Record<number, string>>;
}

/**
 * One page of a cluster-scoped listing: a cluster-admin sees only its own cluster, other admins any or
 * all. Keyset paging on seq, newest first; the page token is bound to the filters it was issued for.
 */
export async function listClusterPage<R extends { seq: string }>(
  deps: Enrollment,
  principal: Principal,
  listing: ClusterListing,
  req: ClusterPageRequest,
): Promise<{ rows: R[]; nextPageToken: string }> {
  const clusterId = listCluster(principal, req.clusterId);
  const filters = `${listing.rpc}|cluster=${clusterId}|state=${req.state}`;
  const size = pageSize(req.pageSize);
  const after = decodePageToken(req.pageToken, filters);
  const where: string[] = [];
  const args: unknown[] = [];
  if (clusterId) where.push(`cluster_id = $${args.push(clusterId)}`);
  if (req.state !== 0) {
    const filter = listing.stateFilters[req.state];
    if (!filter) throw invalidArgument(`state ${req.state} is not a ${listing.noun} state`);
    where.push(filter);
  }
  if (after) {
    const seq = String(after[0]);
    if (!/^\d{1,19}$/.test(seq)) throw invalidArgument("page_token is not a token this server issued");
    where.push(`seq < $${args.push(seq)}`);
  }
  const { rows } = await deps.pool.query<R>(
    `SELECT ${listing.columns} FROM ${listing.table} ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
     ORDER BY seq DESC LIMIT $${args.push(size + 1)}`,
    args,
  );
  const shown = rows.slice(0, size);
  return {
    rows: shown,
    nextPageToken: rows.length > size ? encodePageToken([shown.at(-1)!.seq], filters) : "",
  };
}
