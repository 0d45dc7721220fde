import type { Client, ServiceImpl } from "@connectrpc/connect";
import type { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import type { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import type { Logger, Pool } from "@fabric/platform";
import type { ChangeFeed } from "./change-feed.js";
import type { Model } from "./model.js";
import type { ReportWriter } from "./report-writer.js";
import type { SessionHub } from "./session-hub.js";

/** What every handler module works with. */
export interface Registry {
  pool: Pool;
  model: Model;
  feed: ChangeFeed;
  sessions: SessionHub;
  reports: ReportWriter;
  logger: Logger;
  /** The CA, called with the registry's own identity (RevokeNode). */
  ca: Client<typeof CaService>;
  /** Key for the opaque entry-point ids of organization views. */
  viewKey: Buffer;
}

/** A handler module's share of the RegistryService implementation. */
export type Handlers<K extends keyof ServiceImpl<typeof RegistryService>> = Pick<
  ServiceImpl<typeof RegistryService>,
  K
>;
