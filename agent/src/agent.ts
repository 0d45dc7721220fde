import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { buildSpiffeId, createRpcClient, type Logger } from "@fabric/platform";
import { WorkloadState } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import { EnrollmentService } from "@fabric/proto/fabric/enrollment/v1/enrollment_pb.js";
import { RegistryService } from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import {
  DirectiveKind,
  HeartbeatSchema,
  NodeHealth,
  type Directive,
} from "@fabric/proto/fabric/registry/v1/session_pb.js";
import { RouterService, type SignedSnapshot } from "@fabric/proto/fabric/router/v1/router_pb.js";
import type { AgentConfig } from "./config.js";
import type { ControlPlaneUrls } from "./endpoints.js";
import { EXIT } from "./exit-codes.js";
import { AGENT_VERSION, HostLoad } from "./host-facts.js";
import { IdentityHolder } from "./identity.js";
import { nodeHealth } from "./node-health.js";
import { probeRound } from "./peer-probes.js";
import { ReconnectingStream } from "./reconnecting-stream.js";
import { Renewal } from "./renewal.js";
import { RegistrySession, workloadStatusReport } from "./session.js";
import {
  SnapshotRefused,
  verifySignedSnapshot,
  type VerifiedSnapshot,
  type VerifierIdentity,
} from "./snapshot-verifier.js";
import { SnapshotHighWater, loadPersistedSnapshot, persistSnapshot } from "./snapshot-store.js";
import {
  loadCurrentIdentity,
  markReenrollRequired,
  readReenrollMarker,
  type AgentPaths,
} from "./state-dir.js";
import { snapshotWatch } from "./watch.js";
import { toStatusEntry, writeStatusFile, type AgentStatusFile } from "./status.js";
import { Supervisor } from "./supervisor/supervisor.js";
import type { WorkloadView } from "./supervisor/workload-runner.js";
import type { WorkloadUser } from "./supervisor/workload-user.js";

export interface AgentOptions {
  paths: AgentPaths;
  config: AgentConfig;
  endpoints: ControlPlaneUrls;
  logger: Logger;
  /** Who native workloads run as (resolved from the settings at start). */
  workloadUser: WorkloadUser;
  /** Where the workloads' own directories are made, outside the state directory. */
  workloadRoot: string;
}

/** How a run ended: the exit status and the operator-facing reason. */
export interface AgentOutcome {
  code: number;
  message: string;
}

/** How often status.json is refreshed even when nothing changed, so readers can tell a live agent. */
const STATUS_REFRESH_MS = 5_000;
/** How long a stopping agent waits for the registry to acknowledge the workloads' final status. */
const FINAL_REPORT_WAIT_MS = 2_000;

/**
 * `fabric-agent run`: runs the node from its identity and its last verified snapshot. Opens the router
 * Watch and the registry Session over mTLS, verifies and applies snapshots, supervises the workloads they
 * authorize, reports heartbeats, workload status and peer probes, renews the identity, and survives the
 * control plane being away. Ends (asking for re-enrollment) when the identity expires or is revoked, or
 * the registry says SHUTDOWN.
 */
export class Agent {
  private readonly stopController = new AbortController();
  private readonly identity: IdentityHolder;
  private readonly me: Omit<VerifierIdentity, "caBundlePem">;
  private readonly supervisor: Supervisor;
  private readonly session: RegistrySession;
  private readonly load = new HostLoad();
  private readonly highWater: SnapshotHighWater;
  private applied: VerifiedSnapshot | undefined;
  private appliedAt: Date | undefined;
  private lastRefusal = "";
  private renewalRefused = "";
  /** Last logged state per workload, so only transitions are logged. */
  private readonly lastStates = new Map<string, WorkloadState>();
  /** A probe round is under way (rounds never overlap, however slow the peers). */
  private probing = false;
  private routerUp = false;
  private registryUp = false;
  private outcome: AgentOutcome | undefined;
  private resolveOutcome!: (o: AgentOutcome) => void;
  private readonly finished = new Promise<AgentOutcome>((r) => (this.resolveOutcome = r));
  private readonly timers: NodeJS.Timeout[] = [];
  private statusTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private streams: ReconnectingStream[] = [];
  private renewal: Renewal | undefined;
  private readonly clients;

  constructor(private readonly options: AgentOptions) {
    const { paths, config, logger, endpoints } = options;
    this.identity = new IdentityHolder(loadCurrentIdentity(paths), paths);
    this.highWater = new SnapshotHighWater(paths);
    const who = this.identity.facts().identity;
    if (!who || who.kind !== "node" || !who.cluster) {
      throw new Error(`the identity in ${paths.identity} is not a node identity`);
    }
    this.me = { trustDomain: who.trustDomain, nodeId: who.id, clusterId: who.cluster };
    // Credentials are re-read per call: after a renewal, new connections use the new certificate.
    const credentials = this.identity.current;
    const expect = (id: "router" | "registry" | "enrollment") =>
      buildSpiffeId({ trustDomain: who.trustDomain, kind: "service", id });
    this.clients = {
      // Watch and Session live for hours: PINGs notice a half-open connection so they reconnect.
      router: createRpcClient(RouterService, {
        url: endpoints.routerUrl,
        credentials,
        expectServerId: expect("router"),
        keepaliveMs: 15_000,
      }),
      registry: createRpcClient(RegistryService, {
        url: endpoints.registryUrl,
        credentials,
        expectServerId: expect("registry"),
        keepaliveMs: 15_000,
      }),
      enrollment: createRpcClient(EnrollmentService, {
        url: endpoints.enrollmentUrl,
        credentials,
        expectServerId: expect("enrollment"),
      }),
    };
    this.supervisor = new Supervisor({
      nodeId: who.id,
      stateDir: paths.home,
      workloadRoot: options.workloadRoot,
      workloadUser: options.workloadUser,
      logsDir: paths.logs,
      rotation: { maxBytes: config.logMaxBytes, maxFiles: config.logMaxFiles },
      dockerPath: config.dockerPath,
      logger,
      onChange: (view) => this.workloadChanged(view),
    });
    this.session = new RegistrySession({
      client: this.clients.registry,
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      statusReportIntervalMs: config.statusReportIntervalMs,
      heartbeat: () => this.heartbeat(),
      statuses: () => this.supervisor.views().map(workloadStatusReport),
      onDirective: (d) => this.directive(d),
    });
  }

  /** Runs until stopped (SIGTERM), or until the identity can no longer be used. */
  async run(): Promise<AgentOutcome> {
    const { paths, config, logger } = this.options;
    const facts = this.identity.facts();
    const marker = readReenrollMarker(paths);
    if (marker && marker.serial === facts.serialHex) {
      return {
        code: EXIT.REENROLL_REQUIRED,
        message: `${marker.reason}; re-enroll with: fabric-agent enroll --force`,
      };
    }
    if (facts.notAfter <= new Date()) {
      return this.reenroll(`the node certificate expired at ${facts.notAfter.toISOString()}`);
    }
    logger.info(
      { node: this.me.nodeId, cluster: this.me.clusterId, serial: facts.serialHex },
      "fabric-agent starting",
    );
    this.announceWorkloadUser();

    this.resumeFromDisk();
    this.writeStatus();
    this.timers.push(setInterval(() => this.writeStatus(), STATUS_REFRESH_MS));
    this.armExpiry();

    const signal = this.stopController.signal;
    const backoff = { baseMs: config.reconnectBaseMs, capMs: config.reconnectMaxMs };
    const isFatal = (err: unknown) => ConnectError.from(err).code === Code.Unauthenticated;
    const onFatal = (err: unknown) =>
      void this.reenroll(`the control plane refused this identity: ${ConnectError.from(err).rawMessage}`);
    this.streams = [
      new ReconnectingStream({
        name: "router watch",
        logger,
        signal,
        backoff,
        attempt: snapshotWatch({
          client: this.clients.router,
          knownVersion: () => this.applied?.snapshot.version ?? 0n,
          nodeId: this.me.nodeId,
          clusterId: this.me.clusterId,
          onSnapshot: (envelope) => this.snapshotArrived(envelope),
        }),
        onState: (up) => {
          this.routerUp = up;
          this.scheduleStatus();
        },
        isFatal,
        onFatal,
      }),
      new ReconnectingStream({
        name: "registry session",
        logger,
        signal,
        backoff,
        attempt: (s, established) => this.session.attempt(s, established),
        onState: (up) => {
          this.registryUp = up;
          this.scheduleStatus();
        },
        isFatal,
        onFatal,
      }),
    ];
    this.renewal = new Renewal({
      identity: this.identity,
      enrollment: this.clients.enrollment,
      logger,
      signal,
      onFatal: (err) => void this.reenroll(`renewal refused: ${err.rawMessage}`),
      onRefused: (err) => {
        this.renewalRefused = `renewal refused (${err.rawMessage}): re-enroll before ${this.identity.facts().notAfter.toISOString()}`;
        logger.error(
          { reason: err.rawMessage },
          "identity renewal refused for good; this node must re-enroll before its certificate expires",
        );
        this.scheduleStatus();
      },
    });
    this.identity.onReplaced(() => {
      // New connections carry the new certificate; the open streams are moved onto it at once.
      for (const stream of this.streams) stream.restart();
      this.armExpiry();
      this.scheduleStatus();
    });
    this.timers.push(setInterval(() => void this.probePeers(), config.probeIntervalMs));
    return this.finished;
  }

  /** Graceful stop (SIGTERM/SIGINT): workloads are stopped, the agent exits 0. */
  stop(reason: string): Promise<AgentOutcome> {
    return this.finish({ code: EXIT.OK, message: reason }, "stopped");
  }

  private async reenroll(reason: string): Promise<AgentOutcome> {
    markReenrollRequired(this.options.paths, {
      serial: this.identity.facts().serialHex,
      reason,
      at: new Date().toISOString(),
    });
    this.options.logger.error({ reason }, "this node must re-enroll; stopping");
    return this.finish(
      {
        code: EXIT.REENROLL_REQUIRED,
        message: `${reason}. Re-enroll with: fabric-agent enroll --force --token <new join token>`,
      },
      "reenroll-required",
    );
  }

  private async finish(outcome: AgentOutcome, state: AgentStatusFile["state"]): Promise<AgentOutcome> {
    if (this.outcome) return this.finished;
    this.outcome = outcome;
    this.options.logger.info({ reason: outcome.message }, "fabric-agent stopping; stopping workloads");
    for (const timer of this.timers) clearInterval(timer);
    clearTimeout(this.expiryTimer);
    clearTimeout(this.statusTimer);
    // Workloads stop while the session is still open, so the registry hears their final STOPPED.
    await this.supervisor.close(outcome.code === EXIT.OK ? "agent stopped" : "agent must re-enroll");
    if (this.registryUp) await this.session.delivered(FINAL_REPORT_WAIT_MS);
    this.stopController.abort();
    await Promise.all([...this.streams.map((s) => s.done), this.renewal?.done]);
    this.writeStatus(state, outcome.message);
    this.options.logger.info({ exitCode: outcome.code }, "fabric-agent stopped");
    this.resolveOutcome(outcome);
    return outcome;
  }

  private verifierIdentity(): VerifierIdentity {
    return { ...this.me, caBundlePem: this.identity.current().caBundlePem };
  }

  /** Starts from the persisted snapshot, verified again, so the node works before (or without) the router. */
  private resumeFromDisk(): void {
    try {
      const persisted = loadPersistedSnapshot(this.options.paths, this.verifierIdentity());
      if (!persisted) return;
      this.highWater.check(persisted.snapshot.version);
      this.highWater.raise(persisted.snapshot.version);
      this.options.logger.info(
        { version: String(persisted.snapshot.version) },
        "running from the persisted snapshot",
      );
      this.accept(persisted);
    } catch (err) {
      if (!(err instanceof SnapshotRefused)) throw err;
      this.lastRefusal = `persisted snapshot refused: ${err.message}`;
      this.options.logger.warn({ reason: err.message }, "persisted snapshot refused; waiting for the router");
    }
  }

  private snapshotArrived(envelope: SignedSnapshot): void {
    if (this.outcome) return;
    if (this.applied && Buffer.from(envelope.snapshot).equals(Buffer.from(this.applied.envelope.snapshot)))
      return;
    let verified: VerifiedSnapshot;
    try {
      verified = verifySignedSnapshot(
        envelope,
        this.verifierIdentity(),
        this.applied?.snapshot.version ?? 0n,
      );
      this.highWater.check(verified.snapshot.version);
    } catch (err) {
      if (!(err instanceof SnapshotRefused)) throw err;
      this.lastRefusal = `snapshot refused: ${err.message}`;
      this.options.logger.warn({ reason: err.message }, "snapshot refused; keeping the last verified one");
      this.scheduleStatus();
      return;
    }
    persistSnapshot(this.options.paths, envelope);
    this.highWater.raise(verified.snapshot.version);
    this.lastRefusal = "";
    this.options.logger.info({ version: String(verified.snapshot.version) }, "snapshot verified and applied");
    this.accept(verified);
  }

  private accept(verified: VerifiedSnapshot): void {
    this.applied = verified;
    this.appliedAt = new Date();
    this.supervisor.apply(verified.snapshot);
    this.scheduleStatus();
  }

  /** Says at start who native workloads run as; loudly when that is the agent's own user. */
  private announceWorkloadUser(): void {
    const { workloadUser: user, workloadRoot, logger } = this.options;
    if (user.mode === "separate") {
      logger.info({ user: user.name, uid: user.uid, gid: user.gid, workloadRoot }, "native workloads run as");
    } else if (user.mode === "same-user") {
      logger.warn(
        { setting: "FABRIC_INSECURE_SAME_USER_WORKLOADS" },
        "INSECURE: native workloads run as the agent's own user and can read this node's private key; developer machines only",
      );
    } else {
      logger.warn({ reason: user.reason }, "native workloads will not run");
    }
  }

  private directive(d: Directive): void {
    const { logger } = this.options;
    logger.info({ directive: DirectiveKind[d.kind], reason: d.reason }, "directive from the registry");
    switch (d.kind) {
      case DirectiveKind.RENEW_NOW:
        void this.renewal?.renewNow();
        return;
      case DirectiveKind.DRAIN:
        void this.supervisor.drain().then(() => this.scheduleStatus());
        return;
      case DirectiveKind.SHUTDOWN:
        void this.reenroll(`the registry shut this node down${d.reason ? `: ${d.reason}` : ""}`);
        return;
      default:
        return;
    }
  }

  private armExpiry(): void {
    clearTimeout(this.expiryTimer);
    const notAfter = this.identity.facts().notAfter;
    const check = () => {
      const left = notAfter.getTime() - Date.now();
      if (left <= 0)
        void this.reenroll(`the node certificate expired at ${notAfter.toISOString()} without renewal`);
      else this.expiryTimer = setTimeout(check, Math.min(left, 2 ** 31 - 1));
    };
    check();
  }

  private workloadChanged(view: WorkloadView): void {
    if (this.lastStates.get(view.id) !== view.state) {
      this.lastStates.set(view.id, view.state);
      this.options.logger.info(
        { workload: view.id, state: WorkloadState[view.state], pid: view.pid, detail: view.message },
        "workload state changed",
      );
    }
    if (view.state === WorkloadState.STOPPED) this.lastStates.delete(view.id);
    this.session.reportWorkload(workloadStatusReport(view));
    this.scheduleStatus();
  }

  private async probePeers(): Promise<void> {
    const peers = this.applied?.snapshot.peers ?? [];
    if (peers.length === 0 || !this.registryUp || this.probing) return;
    const { config } = this.options;
    this.probing = true;
    try {
      await probeRound(
        peers,
        { timeoutMs: config.probeTimeoutMs, samples: config.probeSamples, maxPeers: config.probeMaxPeers },
        (report) => this.session.reportProbe(report),
        this.stopController.signal,
      );
    } finally {
      this.probing = false;
    }
  }

  private health(): { state: NodeHealth; message: string } {
    return nodeHealth({
      certificate: this.identity.facts(),
      renewalRefused: this.renewalRefused,
      snapshotApplied: this.applied !== undefined,
      lastRefusal: this.lastRefusal,
      routerUp: this.routerUp,
      drained: this.supervisor.isDrained,
      workloads: this.supervisor.views(),
    });
  }

  private heartbeat() {
    const { cpuRatio, memoryRatio } = this.load.sample();
    const health = this.health();
    return create(HeartbeatSchema, {
      cpuRatio,
      memoryRatio,
      connectionCount: 0,
      agentVersion: AGENT_VERSION,
      snapshotVersion: this.applied?.snapshot.version ?? 0n,
      health: health.state,
      healthMessage: health.message,
      addresses: this.options.config.addresses,
      sentAt: timestampFromDate(new Date()),
    });
  }

  /** Coalesces bursts of changes into one status.json write. */
  private scheduleStatus(): void {
    if (this.statusTimer || this.outcome) return;
    this.statusTimer = setTimeout(() => {
      this.statusTimer = undefined;
      this.writeStatus();
    }, 100);
  }

  private writeStatus(state: AgentStatusFile["state"] = "running", message = ""): void {
    const snapshot = this.applied?.snapshot;
    const health = this.health();
    writeStatusFile(this.options.paths, {
      pid: process.pid,
      state,
      message,
      updatedAt: new Date().toISOString(),
      agentVersion: AGENT_VERSION,
      snapshot: snapshot
        ? {
            version: String(snapshot.version),
            generatedAt: snapshot.generatedAt ? timestampDate(snapshot.generatedAt).toISOString() : "",
            appliedAt: this.appliedAt?.toISOString() ?? "",
          }
        : null,
      connections: { router: this.routerUp, registry: this.registryUp },
      health: { state: NodeHealth[health.state] ?? "UNSPECIFIED", message: health.message },
      drained: this.supervisor.isDrained,
      workloads: this.supervisor.views().map(toStatusEntry),
    });
  }
}
