import { existsSync, readFileSync, rmSync } from "node:fs";
import { writeFileAtomic } from "@fabric/platform";
import { CliError } from "../cli-error.js";
import { EXIT } from "../exit-codes.js";
import type { LocalPaths } from "../local-fabric.js";
import type { Endpoints } from "./launch-plan.js";

/**
 * $FABRIC_HOME/dev/up.json while `fabric up` runs (0600: it holds the database URL): which process owns
 * this FABRIC_HOME, and, once everything is ready, where the services and the database are. It is the
 * lock that keeps two `fabric up` from sharing one home, and how `fabric ca status` finds the database.
 */
export interface UpState {
  pid: number;
  startedAt: string;
  trustDomain?: string;
  databaseUrl?: string;
  endpoints?: Endpoints;
}

/** The state of a `fabric up` that is still running, if any. */
export function runningUp(paths: LocalPaths): UpState | undefined {
  if (!existsSync(paths.upState)) return undefined;
  let state: UpState;
  try {
    state = JSON.parse(readFileSync(paths.upState, "utf8")) as UpState;
  } catch {
    return undefined;
  }
  return alive(state.pid) ? state : undefined;
}

/** Takes the lock for this process; refuses while another `fabric up` runs on the same home. */
export function claimUpState(paths: LocalPaths): { stale: boolean } {
  const other = runningUp(paths);
  if (other && other.pid !== process.pid) {
    throw new CliError(
      EXIT.precondition,
      `fabric up is already running for ${paths.home} (pid ${other.pid}, since ${other.startedAt})`,
      "use it from another terminal, stop it with Ctrl-C, or choose another FABRIC_HOME",
    );
  }
  const stale = existsSync(paths.upState);
  writeUpState(paths, { pid: process.pid, startedAt: new Date().toISOString() });
  return { stale };
}

export function writeUpState(paths: LocalPaths, state: UpState): void {
  writeFileAtomic(paths.upState, `${JSON.stringify(state, null, 2)}\n`, 0o600);
}

export function releaseUpState(paths: LocalPaths): void {
  rmSync(paths.upState, { force: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
