import { join } from "node:path";
import { equals } from "@bufbuild/protobuf";
import { Runtime } from "@fabric/proto/fabric/common/v1/common_pb.js";
import { WorkloadSpecSchema } from "@fabric/proto/fabric/common/v1/workload_pb.js";
import type { AssignedWorkload, Snapshot } from "@fabric/proto/fabric/router/v1/router_pb.js";
import type { Logger } from "@fabric/platform";
import { RotatingLog, type RotationOptions } from "../log-rotation.js";
import { ContainerLauncher } from "./container.js";
import type { Launcher } from "./launcher.js";
import { NativeLauncher } from "./native.js";
import { WorkloadRunner, type WorkloadView } from "./workload-runner.js";
import type { WorkloadUser } from "./workload-user.js";

export interface SupervisorOptions {
  nodeId: string;
  /** The agent's state directory: no workload may work in it or mount it. */
  stateDir: string;
  /** The workloads' own directories (`<workloadRoot>/<id>`), outside the state directory. */
  workloadRoot: string;
  /** Who native workloads run as. */
  workloadUser: WorkloadUser;
  logsDir: string;
  rotation: RotationOptions;
  dockerPath: string;
  logger: Logger;
  /** Every state change of every workload, including the final STOPPED of a removed one. */
  onChange: (view: WorkloadView) => void;
}

/** A workload id as the registry allows it; it names files and directories on the node. */
const WORKLOAD_ID = /^[a-z][a-z0-9-]{0,62}$/;

/** A workload a snapshot lists that this node will not run, and why. */
export interface RefusedWorkload {
  id: string;
  reason: string;
}

/**
 * Which of a verified snapshot's workloads this node may run: those of the snapshot's cluster, for a role
 * the snapshot says the node holds, and (when placement is pinned) naming this node.
 */
export function authorizedWorkloads(
  snapshot: Snapshot,
  nodeId: string,
): { allowed: AssignedWorkload[]; refused: RefusedWorkload[] } {
  const allowed: AssignedWorkload[] = [];
  const refused: RefusedWorkload[] = [];
  const seen = new Set<string>();
  for (const assigned of snapshot.workloads) {
    const spec = assigned.spec;
    if (!spec?.id) {
      refused.push({ id: "", reason: "a workload without an id" });
      continue;
    }
    const reason = !WORKLOAD_ID.test(spec.id)
      ? "its id is not a workload id"
      : seen.has(spec.id)
        ? "listed twice"
        : spec.clusterId !== snapshot.clusterId
          ? `belongs to cluster "${spec.clusterId}", not "${snapshot.clusterId}"`
          : !snapshot.roles.includes(spec.role)
            ? `needs role "${spec.role}", which this node does not hold`
            : spec.nodeIds.length > 0 && !spec.nodeIds.includes(nodeId)
              ? "is placed on other nodes"
              : undefined;
    seen.add(spec.id);
    if (reason) refused.push({ id: spec.id, reason });
    else allowed.push(assigned);
  }
  return { allowed, refused };
}

/**
 * Keeps the node's workloads equal to what the last verified snapshot authorizes: starts new ones, stops
 * removed ones, and replaces those whose spec or generation changed. Nothing else ever starts.
 */
export class Supervisor {
  private readonly runners = new Map<string, WorkloadRunner>();
  /** Stops under way, so a workload re-added at once waits for its previous instance to be gone. */
  private readonly stopping = new Map<string, Promise<void>>();
  private drained = false;
  private closed = false;

  constructor(private readonly options: SupervisorOptions) {}

  /** Reconciles with a verified snapshot. Returns the workloads it refused to run. */
  apply(snapshot: Snapshot): RefusedWorkload[] {
    if (this.closed) return [];
    const { allowed, refused } = authorizedWorkloads(snapshot, this.options.nodeId);
    for (const r of refused) {
      this.options.logger.warn({ workload: r.id, reason: r.reason }, "snapshot workload not run");
    }
    const desired = new Map(this.drained ? [] : allowed.map((a) => [a.spec!.id, a]));
    for (const [id, runner] of this.runners) {
      const want = desired.get(id);
      if (
        want &&
        want.generation === runner.generation &&
        equals(WorkloadSpecSchema, want.spec!, runner.spec)
      ) {
        desired.delete(id);
        continue;
      }
      this.retire(runner, want ? "replaced by a new spec" : "no longer assigned to this node");
    }
    for (const assigned of desired.values()) this.launch(assigned);
    return refused;
  }

  /** DRAIN: stop every workload and start none until the agent restarts. */
  async drain(): Promise<void> {
    this.drained = true;
    await this.stopAll("drained");
  }

  get isDrained(): boolean {
    return this.drained;
  }

  /** Stops everything (agent shutdown); later snapshots start nothing. */
  async close(reason: string): Promise<void> {
    this.closed = true;
    await this.stopAll(reason);
  }

  views(): WorkloadView[] {
    return [...this.runners.values()].map((r) => r.view()).sort((a, b) => a.id.localeCompare(b.id));
  }

  private async stopAll(reason: string): Promise<void> {
    for (const runner of this.runners.values()) this.retire(runner, reason);
    await Promise.all(this.stopping.values());
  }

  private retire(runner: WorkloadRunner, reason: string): void {
    this.runners.delete(runner.id);
    const previous = this.stopping.get(runner.id) ?? Promise.resolve();
    const done: Promise<void> = previous
      .then(() => runner.stop(reason))
      .catch((err: unknown) =>
        this.options.logger.error({ workload: runner.id, err: (err as Error).message }, "stopping failed"),
      )
      .finally(() => {
        if (this.stopping.get(runner.id) === done) this.stopping.delete(runner.id);
      });
    this.stopping.set(runner.id, done);
  }

  private launch(assigned: AssignedWorkload): void {
    const spec = assigned.spec!;
    const log = new RotatingLog(join(this.options.logsDir, `${spec.id}.log`), this.options.rotation);
    const launcher: Launcher =
      spec.runtime === Runtime.CONTAINER
        ? new ContainerLauncher({
            spec,
            generation: assigned.generation,
            dockerPath: this.options.dockerPath,
            protectedPaths: [this.options.stateDir, this.options.workloadRoot],
            log,
          })
        : new NativeLauncher({
            spec,
            generation: assigned.generation,
            workloadRoot: this.options.workloadRoot,
            stateDir: this.options.stateDir,
            user: this.options.workloadUser,
            log,
          });
    const runner = new WorkloadRunner(spec, assigned.generation, launcher, this.options.onChange);
    this.runners.set(spec.id, runner);
    const previous = this.stopping.get(spec.id);
    if (previous) void previous.then(() => runner.start());
    else runner.start();
    this.options.logger.info(
      { workload: spec.id, generation: String(assigned.generation) },
      "workload assigned",
    );
  }
}
