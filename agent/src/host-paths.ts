import { chmodSync, lstatSync, mkdirSync, realpathSync } from "node:fs";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import type { Mount } from "@fabric/proto/fabric/common/v1/workload_pb.js";

/**
 * Host paths a mount would hand a workload the node itself with: /proc (every process's root and
 * memory), /sys and /dev, and the docker socket (any container, any host path).
 */
const HOST_INTERNALS = ["/proc", "/sys", "/dev", "/run/docker.sock", "/var/run/docker.sock"];

/**
 * The path with symlinks resolved as far as it exists (the rest appended), so a link cannot disguise
 * where it leads, not even to a directory that does not exist yet (docker would create it there).
 */
export function realPath(path: string): string {
  const absolute = resolve(path);
  try {
    return realpathSync(absolute);
  } catch {
    const parent = dirname(absolute);
    return parent === absolute ? absolute : join(realPath(parent), basename(absolute));
  }
}

/** Whether `path` is `dir` or lies inside it. */
export function isWithin(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel === "" || (rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/**
 * Why these mounts cannot be given to a workload: a source that is one of `protectedPaths` (the agent's
 * state directory, the workload root) or of the host's internals, lies inside one, or contains one
 * (mounting `/` exposes the state directory as much as mounting it).
 */
export function mountRefusal(mounts: Mount[], protectedPaths: string[]): string | undefined {
  const guarded = [...protectedPaths, ...HOST_INTERNALS].map(realPath);
  for (const mount of mounts) {
    const source = realPath(mount.source);
    const hit = guarded.find((p) => isWithin(source, p) || isWithin(p, source));
    if (hit !== undefined) {
      return `mount source ${mount.source} would expose ${hit} to the workload; refused`;
    }
  }
  return undefined;
}

/**
 * Makes `path` a directory owned by this process with exactly `mode`, creating it if needed. Refuses a
 * symlink or a directory owned by anyone else: whoever owns it could swap what lies inside for links to
 * places the agent would then write to or hand out.
 */
export function ownDirectory(path: string, mode: number): void {
  mkdirSync(path, { recursive: true, mode });
  const st = lstatSync(path);
  const uid = process.getuid?.();
  if (st.isSymbolicLink() || !st.isDirectory()) {
    throw new Error(`${path} must be a directory, not a link (give its real path)`);
  }
  if (uid !== undefined && st.uid !== uid) {
    throw new Error(`${path} is owned by uid ${st.uid}, not by fabric-agent (uid ${uid})`);
  }
  if ((st.mode & 0o7777) !== mode) chmodSync(path, mode);
}
