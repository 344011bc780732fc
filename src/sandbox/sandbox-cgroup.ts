// Kernel limits on a whole sandbox through control groups, where the host lets this server
// make them (root, with the pids and memory controllers mounted):
//   pids    pids.max caps the processes and threads of the sandbox together (a fork bomb stays
//           inside its cap and fails with EAGAIN)
//   memory  the memory budget as a hard limit (the kernel's OOM killer ends the sandbox at it;
//           the meter names the dimension)
// cgroup v1 (separate hierarchies, as on these hosts in hybrid mode) and v2 (one unified
// hierarchy) are both handled. The server puts bwrap in its groups before it hands bwrap
// its options (see sandbox.ts), so nothing the sandbox starts escapes them. Where no group can be made, the
// caller falls back to RLIMIT_NPROC and metering.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync, type Dirent } from "node:fs";
import { join } from "node:path";

const ROOT = "/sys/fs/cgroup";
const PARENT = "amctl-sandboxes";

export interface CgroupLimits {
  maxProcesses: number;
  /** 0: none. */
  memoryBytes: number;
}

export interface SandboxCgroup {
  /** The `cgroup.procs` files a process writes its pid to, to enter the groups. */
  procsFiles: string[];
  /** Whether the kernel's OOM killer acted in the group (the memory limit was reached). */
  oomKilled(): boolean;
  /** The most memory the group held (0 without a memory group): it sees what sampling misses. */
  peakMemoryBytes(): number;
  /**
   * Kills every process in the groups, whatever its parentage (one that bwrap's init left
   * behind, re-parented outside the sandbox's tree, included), then removes the groups once
   * they are empty: call when the attempt ends.
   */
  killAndRemove(): void;
  /** Kills every process in the groups now (one pass; the groups stay). */
  kill(): void;
  /** The pids in the groups now (every process of the sandbox). */
  pids(): number[];
}

function isV2(): boolean {
  return existsSync(join(ROOT, "cgroup.controllers"));
}

function makeGroup(base: string, id: string, settings: Record<string, string>): string {
  const parent = join(base, PARENT);
  mkdirSync(parent, { recursive: true });
  const dir = join(parent, id);
  mkdirSync(dir);
  for (const [file, value] of Object.entries(settings)) writeFileSync(join(dir, file), value);
  return dir;
}

/**
 * Groups for one sandbox, or undefined when this host or user cannot make them. They are named
 * `id` and this process's pid, so a sweep by another server on the host knows whose they are.
 */
export function createSandboxCgroup(sandboxId: string, limits: CgroupLimits): SandboxCgroup | undefined {
  const id = `${sandboxId}-${process.pid}`;
  const made: string[] = [];
  try {
    if (isV2()) {
      // The parent must delegate the controllers to its children.
      mkdirSync(join(ROOT, PARENT), { recursive: true });
      writeFileSync(join(ROOT, PARENT, "cgroup.subtree_control"), "+pids +memory");
      const dir = makeGroup(ROOT, id, {
        "pids.max": String(limits.maxProcesses),
        ...(limits.memoryBytes > 0 ? { "memory.max": String(limits.memoryBytes) } : {}),
      });
      made.push(dir);
      return group(made, () => /^oom_kill [1-9]/m.test(readFileSync(join(dir, "memory.events"), "utf8")), join(dir, "memory.peak"));
    }
    made.push(makeGroup(join(ROOT, "pids"), id, { "pids.max": String(limits.maxProcesses) }));
    if (limits.memoryBytes > 0) {
      const memory = makeGroup(join(ROOT, "memory"), id, { "memory.limit_in_bytes": String(limits.memoryBytes) });
      made.push(memory);
      return group(made, () => /^oom_kill [1-9]/m.test(readFileSync(join(memory, "memory.oom_control"), "utf8")), join(memory, "memory.max_usage_in_bytes"));
    }
    return group(made, () => false);
  } catch {
    removeAll(made);
    return undefined;
  }
}

function removeAll(dirs: readonly string[]): boolean {
  let removed = true;
  for (const dir of dirs) {
    try {
      rmdirSync(dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") removed = false; // still busy
    }
  }
  return removed;
}

/** The pids in a group now. */
function members(dir: string): number[] {
  try {
    return readFileSync(join(dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Whether the process that made a group (its name ends with that process's pid) is gone. */
function ownerGone(name: string): boolean {
  const owner = /-(\d+)$/.exec(name)?.[1];
  if (owner === undefined || Number(owner) === process.pid) return true;
  try {
    process.kill(Number(owner), 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ESRCH";
  }
}

/**
 * Removes the groups that sandboxes left behind (a server killed before it could): a group
 * whose sandbox still runs is not empty, and rmdir refuses it. A group of another live server
 * (several may share a host) is left alone even when empty: its sandbox may be about to enter.
 */
export function sweepLeftoverCgroups(): void {
  for (const base of isV2() ? [ROOT] : [join(ROOT, "pids"), join(ROOT, "memory")]) {
    let entries: Dirent[];
    try {
      entries = readdirSync(join(base, PARENT), { withFileTypes: true });
    } catch {
      continue;
    }
    // The type comes with the listing: no stat that a group removed meanwhile (by the sandbox
    // that owned it) would fail. removeAll tolerates one already gone.
    for (const entry of entries) {
      if (entry.isDirectory() && ownerGone(entry.name)) removeAll([join(base, PARENT, entry.name)]);
    }
  }
}

function killMembers(dirs: readonly string[]): void {
  for (const dir of dirs) {
    for (const pid of members(dir)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone meanwhile
      }
    }
  }
}

function group(dirs: string[], oom: () => boolean, peakFile?: string): SandboxCgroup {
  return {
    peakMemoryBytes: () => {
      try {
        return peakFile === undefined ? 0 : Number(readFileSync(peakFile, "utf8").trim()) || 0;
      } catch {
        return 0; // memory.peak is new (Linux 5.19)
      }
    },
    procsFiles: dirs.map((dir) => join(dir, "cgroup.procs")),
    oomKilled: () => {
      try {
        return oom();
      } catch {
        return false;
      }
    },
    kill: () => killMembers(dirs),
    pids: () => members(dirs[0]!),
    killAndRemove: () => {
      // Each round kills what is there; a process forked meanwhile is caught by the next one.
      const rounds = { left: 50 };
      const attempt = (): void => {
        killMembers(dirs);
        if (removeAll(dirs) || --rounds.left <= 0) return;
        setTimeout(attempt, 20).unref(); // killed processes take a moment to leave the group
      };
      attempt();
    },
  };
}
