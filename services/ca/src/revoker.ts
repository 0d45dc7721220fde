import {
  notFound,
  principalKey,
  transaction,
  type Pool,
  type PrincipalKind,
  type RevocationSet,
  type Tx,
} from "@fabric/platform";
import { RevocationReason } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { lockForCompromiseReport, reportCompromisedKeys } from "./compromised-keys.js";
import { lockCertificates, type StoredCertificate } from "./inventory.js";
import { BACKDATE_MS, type LifetimePolicy } from "./lifetimes.js";
import {
  appendRevocations,
  toRevokedEntry,
  type RevocationBroadcaster,
  type RevocationEvent,
} from "./revocation-log.js";

export interface RevokeOutcome {
  revokedSerials: string[];
  revokedAt: Date;
  /** Feed version at which the revocation is visible (the head when nothing new was revoked). */
  version: bigint;
}

export interface Actor {
  id: string;
  kind: string;
}

export interface RevokerOptions {
  pool: Pool;
  broadcaster: RevocationBroadcaster;
  /** The CA process's own revoked set (revocationSource "self"). */
  ownSet: RevocationSet;
  lifetimes: LifetimePolicy;
  issuerNotAfter: Date;
  /** Called after each committed revocation (the CRL rebuild is debounced there). */
  onRevoked: () => void;
}

/**
 * Revocation: marks certificates revoked, appends the feed events and the audit events in one
 * transaction, then (after commit) feeds the CA's own revoked set, the open WatchRevocations streams and
 * the CRL. Revocation is final: already-revoked certificates are left as they are.
 *
 * A revocation for keyCompromise also reports the keys of the certificates it names (even one already
 * revoked for another reason) as compromised, which Sign refuses for good, and revokes every other current
 * certificate carrying them — within `scope` (a cluster-admin's cluster) when one is given: a
 * cluster-admin's report stops the key everywhere from now on, but revokes only what it administers.
 */
export class Revoker {
  /** Latest principal-wide revocation per principal: new certificates must start after it. */
  private readonly cutoffs = new Map<string, Date>();

  constructor(private readonly options: RevokerOptions) {}

  /** Applies events already in the table (at start) to the cutoffs. */
  load(events: RevocationEvent[]): void {
    for (const e of events) this.noteCutoff(e);
  }

  /** When set, a certificate for this principal must start after this time. */
  cutoffFor(kind: PrincipalKind, id: string): Date | undefined {
    return this.cutoffs.get(principalKey(kind, id));
  }

  async revokeSerial(
    serial: string,
    reason: number,
    comment: string,
    actor: Actor,
    scope = "",
  ): Promise<RevokeOutcome> {
    return this.revoke(actor, reason, comment, scope, async (tx) => {
      const [cert] = await lockCertificates(tx, { serial });
      if (!cert) {
        throw notFound(`no certificate with serial ${serial} was issued by this CA; check ListCertificates`);
      }
      return { certificates: cert.revokedAt ? [] : [cert], named: [cert] };
    });
  }

  /**
   * Revokes every current certificate of a principal. Without a cluster it also records a principal-wide
   * entry, so certificates of the principal that started before now are refused even where their serial
   * is unknown. Scoped to a cluster it revokes that cluster's certificates by serial only: a
   * principal-wide entry would also cut the principal's memberships in other clusters.
   */
  async revokePrincipal(
    kind: PrincipalKind,
    id: string,
    clusterId: string,
    reason: number,
    comment: string,
    actor: Actor,
  ): Promise<RevokeOutcome> {
    return this.revoke(actor, reason, comment, clusterId, async (tx) => {
      const certificates = await lockCertificates(tx, { kind, id, clusterId });
      return { certificates, named: certificates, principal: clusterId ? undefined : { kind, id } };
    });
  }

  private async revoke(
    actor: Actor,
    reason: number,
    comment: string,
    scope: string,
    select: (tx: Tx) => Promise<{
      /** To revoke now. */
      certificates: StoredCertificate[];
      /** Whose keys a keyCompromise reports. */
      named: StoredCertificate[];
      principal?: { kind: PrincipalKind; id: string } | undefined;
    }>,
  ): Promise<RevokeOutcome> {
    const revokedAt = new Date();
    const compromise = reason === Number(RevocationReason.KEY_COMPROMISE);
    const { events, head } = await transaction(this.options.pool, async (tx) => {
      if (compromise) await lockForCompromiseReport(tx);
      const selected = await select(tx);
      const { principal } = selected;
      let { certificates } = selected;
      let compromisedKeys: string[] = [];
      if (compromise) {
        compromisedKeys = await reportCompromisedKeys(tx, selected.named, revokedAt, actor);
        const keys = [...new Set(selected.named.flatMap((c) => c.publicKeySha256 ?? []))];
        const chosen = new Set(certificates.map((c) => c.serial));
        const sharing = keys.length ? await lockCertificates(tx, { publicKeys: keys, clusterId: scope }) : [];
        certificates = [...certificates, ...sharing.filter((c) => !chosen.has(c.serial))];
      }
      const pending: Omit<RevocationEvent, "version">[] = certificates.map((c) => ({
        serial: c.serial,
        principalKind: c.principalKind,
        principalId: c.principalId,
        clusterId: c.clusterId,
        reason,
        revokedAt,
        notAfter: c.notAfter,
      }));
      if (principal) {
        pending.push({
          serial: "",
          principalKind: principal.kind,
          principalId: principal.id,
          clusterId: "",
          reason,
          revokedAt,
          notAfter: this.principalEntryExpiry(principal.kind, revokedAt, certificates),
        });
      }
      const appended = await appendRevocations(tx, pending);
      if (certificates.length > 0) {
        await tx.query(
          "UPDATE certificates SET revoked_at = $1, revocation_reason = $2 WHERE serial = ANY($3::text[])",
          [revokedAt, reason, certificates.map((c) => c.serial)],
        );
      }
      for (const c of certificates) {
        tx.audit({
          actorId: actor.id,
          actorKind: actor.kind,
          action: "certificate.revoke",
          targetType: "certificate",
          targetId: c.serial,
          clusterId: c.clusterId,
          orgId: c.organizationId,
          outcome: "success",
          details: { principal: `${c.principalKind}/${c.principalId}`, reason: String(reason), comment },
        });
      }
      for (const key of compromisedKeys) {
        tx.audit({
          actorId: actor.id,
          actorKind: actor.kind,
          action: "key.compromise",
          targetType: "public_key",
          targetId: key,
          clusterId: scope,
          outcome: "success",
          details: { comment },
        });
      }
      if (principal) {
        tx.audit({
          actorId: actor.id,
          actorKind: actor.kind,
          action: "principal.revoke",
          targetType: "principal",
          targetId: `${principal.kind}/${principal.id}`,
          outcome: "success",
          details: { reason: String(reason), comment, certificates: String(certificates.length) },
        });
      }
      const headRow = await tx.query<{ version: string }>("SELECT version::text FROM revocation_head");
      tx.afterCommit(() => this.published(appended));
      return { events: appended, head: BigInt(headRow.rows[0]!.version) };
    });
    return {
      revokedSerials: events.filter((e) => e.serial).map((e) => e.serial),
      revokedAt,
      version: head,
    };
  }

  /** A principal-wide entry matters as long as any certificate it covers could still be valid. */
  private principalEntryExpiry(kind: PrincipalKind, at: Date, known: StoredCertificate[]): Date {
    const latestPossible = Math.min(
      at.getTime() + this.options.lifetimes[kind].maxMs + BACKDATE_MS,
      this.options.issuerNotAfter.getTime(),
    );
    return new Date(Math.max(latestPossible, ...known.map((c) => c.notAfter.getTime())));
  }

  private noteCutoff(e: RevocationEvent): void {
    if (e.serial) return;
    const key = principalKey(e.principalKind, e.principalId);
    const current = this.cutoffs.get(key);
    if (!current || current < e.revokedAt) this.cutoffs.set(key, e.revokedAt);
  }

  private published(events: RevocationEvent[]): void {
    if (events.length === 0) return;
    for (const e of events) {
      this.noteCutoff(e);
      this.options.ownSet.add(toRevokedEntry(e));
    }
    this.options.ownSet.version = events[events.length - 1]!.version;
    this.options.broadcaster.publish(events);
    this.options.onRevoked();
  }
}
