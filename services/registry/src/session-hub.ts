import { create } from "@bufbuild/protobuf";
import { failedPrecondition, type FabricError } from "@fabric/platform";
import {
  MembershipState,
  NodeState,
  type Membership,
  type Node,
} from "@fabric/proto/fabric/registry/v1/inventory_pb.js";
import {
  DirectiveKind,
  DirectiveSchema,
  type Directive,
} from "@fabric/proto/fabric/registry/v1/session_pb.js";
import type { AnyEntity } from "./entities.js";
import type { FeedChange } from "./model.js";

/** An open Session as the rest of the registry reaches it. */
export interface LiveSession {
  nodeId: string;
  clusterId: string;
  /** Sends a directive to the node. */
  send(directive: Directive): void;
  /** Ends the stream, with an error for the agent when given. */
  end(error?: FabricError): void;
}

export const directive = (kind: DirectiveKind, reason: string): Directive =>
  create(DirectiveSchema, { kind, reason: reason.slice(0, 512) });

/**
 * The open Sessions of this process, one per node and cluster: a new session of the same node and
 * cluster replaces the old one. Directives follow the model: when a node is revoked its sessions get
 * SHUTDOWN and end; when a membership is disabled that session gets DRAIN and ends.
 */
export class SessionHub {
  private readonly sessions = new Map<string, LiveSession>();

  add(session: LiveSession): void {
    const key = `${session.nodeId}/${session.clusterId}`;
    const previous = this.sessions.get(key);
    this.sessions.set(key, session);
    previous?.end(
      failedPrecondition(
        `replaced by a newer session of node "${session.nodeId}" in cluster "${session.clusterId}"`,
      ),
    );
  }

  remove(session: LiveSession): void {
    const key = `${session.nodeId}/${session.clusterId}`;
    if (this.sessions.get(key) === session) this.sessions.delete(key);
  }

  private ofNode(nodeId: string): LiveSession[] {
    return [...this.sessions.values()].filter((s) => s.nodeId === nodeId);
  }

  /** Reacts to a change the model applied. */
  onChange = (change: FeedChange, previous: AnyEntity | undefined): void => {
    if (change.kind === "node" && !change.deleted) {
      const node = change.entity as Node;
      if (node.state === NodeState.REVOKED && (previous as Node | undefined)?.state !== NodeState.REVOKED) {
        for (const s of this.ofNode(node.id)) this.shutDown(s, `node "${node.id}" was revoked`);
      }
    }
    if (change.kind === "membership" && !change.deleted) {
      const m = change.entity as Membership;
      const before = (previous as Membership | undefined)?.state;
      const session = this.sessions.get(`${m.nodeId}/${m.clusterId}`);
      if (!session || before === m.state) return;
      if (m.state === MembershipState.REVOKED) this.shutDown(session, `node "${m.nodeId}" was revoked`);
      if (m.state === MembershipState.DISABLED) {
        const why = `membership in cluster "${m.clusterId}" was disabled: ${m.disabledReason}`;
        session.send(directive(DirectiveKind.DRAIN, why));
        session.end(failedPrecondition(`${why}; an admin must enable it before this node reconnects`));
      }
    }
  };

  private shutDown(session: LiveSession, reason: string): void {
    session.send(directive(DirectiveKind.SHUTDOWN, `${reason}; the host must enroll again as a new node`));
    session.end();
  }

  /** Ends every session (shutdown of the process). */
  closeAll(): void {
    for (const s of this.sessions.values()) s.end();
    this.sessions.clear();
  }
}
