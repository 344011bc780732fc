// Kernel limits on a whole sandbox through control groups, where the host lets this server
// make them (root, with the pids and memory controllers mounted):
//   pids    pids.max caps the processes and threads of the sandbox together (a fork bomb stays
//           inside its cap and fails with EAGAIN)
//   memory  the memory budget as a hard limit (the kernel's OOM killer ends the sandbox at it;
//           the meter names the dimension)
// cgroup v1 (separate hierarchies, as on these hosts in hybrid mode) and v2 (one unified
// hierarchy) are both handled. A process enters its groups before it execs setpriv (see
// sandbox.ts), so nothing the sandbox starts escapes them. Where no group can be made, the
// caller falls back to RLIMIT_NPROC and metering.
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
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
  /** Removes the groups (they must be empty: call after the sandbox is gone). */
  remove(): void;
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

/** Groups for one sandbox, or undefined when this host or user cannot make them. */
export function createSandboxCgroup(id: string, limits: CgroupLimits): SandboxCgroup | undefined {
  const made: string[] = [];
  try {
    if (isV2()) {
      // The parent must delegate the controllers to its children.
      mkdirSync(join(ROOT, PARENT), { recursive: true });
      writeFileSync(join(ROOT, PARENT, "cgroup.subtree_control"), "+pids +memory");
      const dir = makeGroup(ROOT, id, { "pids.max": String(limits.maxProcesses), ...(limits.memoryBytes > 0 ? { "memory.max": String(limits.memoryBytes) } : {}) });
      made.push(dir);
      return group(made, () => /^oom_kill [1-9]/m.test(readFileSync(join(dir, "memory.events"), "utf8")));
    }
    made.push(makeGroup(join(ROOT, "pids"), id, { "pids.max": String(limits.maxProcesses) }));
    if (limits.memoryBytes > 0) {
      const memory = makeGroup(join(ROOT, "memory"), id, { "memory.limit_in_bytes": String(limits.memoryBytes) });
      made.push(memory);
      return group(made, () => /^oom_kill [1-9]/m.test(readFileSync(join(memory, "memory.oom_control"), "utf8")));
    }
    return group(made, () => false);
  } catch {
    removeAll(made);
    return undefined;
  }
}

function removeAll(dirs: readonly string[]): void {
  for (const dir of dirs) {
    try {
      rmdirSync(dir);
    } catch {
      // still busy or gone; the next start's sweep is not needed: names are unique
    }
  }
}

function group(dirs: string[], oom: () => boolean): SandboxCgroup {
  return {
    procsFiles: dirs.map((dir) => join(dir, "cgroup.procs")),
    oomKilled: () => {
      try {
        return oom();
      } catch {
        return false;
      }
    },
    remove: () => removeAll(dirs),
  };
}
