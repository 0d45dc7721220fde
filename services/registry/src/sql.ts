import type { PoolClient } from "@fabric/platform";

/** Anything that runs SQL: the pool for reads, a transaction's client for writes. */
export type Sql = Pick<PoolClient, "query">;
