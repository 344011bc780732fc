// Opens what an attempt's mounts bind, just before it starts, and makes sure it is what
// admission judged. Admission resolved every host path (no symbolic link, no `..`) and recorded
// the resolved path on the operation (src/lifecycle/mount-admission.ts); here each source is
// opened (O_PATH: a handle on the file itself, which reads nothing) and the path the kernel
// gives for the open descriptor must be that recorded path. If a component was swapped for a
// link since, the descriptor points elsewhere and the attempt fails. bubblewrap then binds the
// descriptor (--ro-bind-fd/--bind-fd), not the path, and checks after mounting that it mounted
// that very file (device and inode), so nothing swapped after this check redirects the bind.
//
// A workspace mount (a relative host path) names a directory of the operation's own workspace,
// created here if missing one component at a time: every existing component must be a real
// directory, never a link, since an earlier attempt of the operation could have left a link
// there pointing out of the workspace.
import { closeSync, lstatSync, mkdirSync, openSync, readlinkSync, realpathSync, type Stats } from "node:fs";
import { join } from "node:path";
import type { Mount } from "../gen/agentmachine/v1/operation_pb.js";

/** Linux's O_PATH (the same on every architecture Node runs on here): open without reading. */
const O_PATH = 0o10000000;

export interface MountSource {
  /** An O_PATH descriptor on the source; the caller closes it (closeMountSources) once the sandbox or container has it. */
  fd: number;
  /** The source's resolved host path, as checked. */
  source: string;
  /** Where it appears inside. */
  target: string;
  readWrite: boolean;
}

/** A mount whose source is not what admission judged, or that would leave the workspace. */
export class MountUnavailable extends Error {
  readonly code = "MOUNT_UNAVAILABLE";
}

/** Creates `relative` under `root` one directory at a time, refusing any component that is not a real directory. */
function workspaceDirectory(root: string, relative: string, share: (dir: string) => void): string {
  let dir = root;
  for (const part of relative === "." ? [] : relative.split("/")) {
    dir = join(dir, part);
    let stat: Stats;
    try {
      stat = lstatSync(dir);
    } catch {
      mkdirSync(dir, { mode: 0o700 });
      share(dir);
      continue;
    }
    if (!stat.isDirectory()) throw new MountUnavailable(`${relative} in the workspace is not a directory`);
  }
  return dir;
}

function openChecked(source: string): number {
  const fd = openSync(source, O_PATH);
  if (readlinkSync(`/proc/self/fd/${fd}`) !== source) {
    closeSync(fd);
    throw new MountUnavailable("a mount's host path changed since admission");
  }
  return fd;
}

/**
 * The sources of `mounts`, opened and checked, parents before children (a mount inside another
 * is bound after it, or the outer one would hide it). `share` is applied to each workspace
 * directory created, so the sandbox's or the container's user can write it.
 */
export function openMountSources(mounts: readonly Mount[], workspace: string, share: (dir: string) => void): MountSource[] {
  const opened: MountSource[] = [];
  try {
    const root = realpathSync(workspace);
    for (const mount of [...mounts].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
      const inWorkspace = !mount.hostPath.startsWith("/");
      const source = inWorkspace ? workspaceDirectory(root, mount.hostPath, share) : mount.hostPath;
      // Only a workspace mount is ever read-write (admission refuses others; this holds regardless).
      opened.push({ fd: openChecked(source), source, target: mount.path, readWrite: mount.readWrite && inWorkspace });
    }
    return opened;
  } catch (error) {
    closeMountSources(opened);
    throw error;
  }
}

export function closeMountSources(sources: readonly MountSource[]): void {
  for (const { fd } of sources) closeSync(fd);
}
