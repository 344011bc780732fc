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
//
// Groups are made before the attempt they will serve is known (spare-sandboxes.ts), so the
// memory group is always made and its limit set when the attempt claims it. Entering a group
// (a write of the pid to `cgroup.procs`) waits for an RCU grace period in the kernel, 4 to
// 20 ms here, holding the kernel's cgroup lock, which making and removing a group wait for:
// those three are done off the event loop.
import { existsSync, readdirSync, readFileSync, rmdirSync, writeFileSync, type Dirent } from "node:fs";
import { mkdir, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

const ROOT = "/sys/fs/cgroup";
const PARENT = "amctl-sandboxes";

export interface SandboxCgroup {
  /** Moves a process into the groups (the kernel then keeps its children there). */
  enter(pid: number): Promise<void>;
  /** Sets the memory limit (0: none); before anything of the sandbox runs. */
  limitMemory(bytes: number): void;
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

/** Makes a group and records it in `made` (to be removed if a later step fails). */
async function makeGroup(base: string, id: string, settings: Record<string, string>, made: string[]): Promise<string> {
  const parent = join(base, PARENT);
  await mkdir(parent, { recursive: true });
  const dir = join(parent, id);
  await mkdir(dir);
  made.push(dir);
  for (const [file, value] of Object.entries(settings)) await writeFile(join(dir, file), value);
  return dir;
}

/**
 * Groups for one sandbox, or undefined when this host or user cannot make them. They are named
 * `id` and this process's pid, so a sweep by another server on the host knows whose they are.
 */
export async function createSandboxCgroup(sandboxId: string, maxProcesses: number): Promise<SandboxCgroup | undefined> {
  const id = `${sandboxId}-${process.pid}`;
  const made: string[] = [];
  try {
    if (isV2()) {
      // The parent must delegate the controllers to its children.
      await mkdir(join(ROOT, PARENT), { recursive: true });
      await writeFile(join(ROOT, PARENT, "cgroup.subtree_control"), "+pids +memory");
      const dir = await makeGroup(ROOT, id, { "pids.max": String(maxProcesses) }, made);
      return group(made, {
        oom: () => /^oom_kill [1-9]/m.test(readFileSync(join(dir, "memory.events"), "utf8")),
        limitFile: join(dir, "memory.max"),
        peakFile: join(dir, "memory.peak"),
      });
    }
    await makeGroup(join(ROOT, "pids"), id, { "pids.max": String(maxProcesses) }, made);
    const memory = await makeGroup(join(ROOT, "memory"), id, {}, made);
    return group(made, {
      oom: () => /^oom_kill [1-9]/m.test(readFileSync(join(memory, "memory.oom_control"), "utf8")),
      limitFile: join(memory, "memory.limit_in_bytes"),
      peakFile: join(memory, "memory.max_usage_in_bytes"),
    });
  } catch {
    await removeAll(made);
    return undefined;
  }
}

/** Removes the groups; whether all are gone. */
async function removeAll(dirs: readonly string[]): Promise<boolean> {
  let removed = true;
  for (const dir of dirs) {
    await rmdir(dir).catch((error: unknown) => {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") removed = false; // still busy
    });
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

/**
 * Whether the process that made a group (its name ends with that process's pid) is gone. This
 * process's own groups are not: each belongs to a sandbox of a server in it (a test process
 * runs several), maybe made and not yet entered, and is removed when that sandbox ends.
 */
function ownerGone(name: string): boolean {
  const owner = /-(\d+)$/.exec(name)?.[1];
  if (owner === undefined) return true;
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
    // that owned it) would fail.
    for (const entry of entries) {
      if (!entry.isDirectory() || !ownerGone(entry.name)) continue;
      try {
        rmdirSync(join(base, PARENT, entry.name));
      } catch {
        // still busy (its sandbox runs) or gone already
      }
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

interface MemoryFiles {
  oom: () => boolean;
  limitFile: string;
  peakFile: string;
}

function group(dirs: string[], { oom, limitFile, peakFile }: MemoryFiles): SandboxCgroup {
  return {
    peakMemoryBytes: () => {
      try {
        return Number(readFileSync(peakFile, "utf8").trim()) || 0;
      } catch {
        return 0; // memory.peak is new (Linux 5.19)
      }
    },
    enter: async (pid) => {
      for (const dir of dirs) await writeFile(join(dir, "cgroup.procs"), String(pid));
    },
    limitMemory: (bytes) => {
      if (bytes > 0) writeFileSync(limitFile, String(bytes));
    },
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
      const attempt = async (): Promise<void> => {
        killMembers(dirs);
        if ((await removeAll(dirs)) || --rounds.left <= 0) return;
        setTimeout(() => void attempt(), 20).unref(); // killed processes take a moment to leave the group
      };
      void attempt();
    },
  };
}
