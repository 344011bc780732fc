// Identifies a process across a server crash: its id plus its start time in clock ticks since
// boot (field 22 of /proc/PID/stat), so a later process that reused the id is never mistaken
// for it. Linux only; elsewhere identity is unknown and orphans cannot be stopped.
import { readFileSync } from "node:fs";

export function processStartTicks(pid: number): bigint | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const state = fields[0];
    const ticks = fields[19];
    return state === "Z" || ticks === undefined ? undefined : BigInt(ticks);
  } catch {
    return undefined;
  }
}

/** Kills the process group led by `pid` if that leader is still the process that started at `startTicks`. */
export function killOrphanGroup(pid: number, startTicks: bigint): boolean {
  if (pid <= 0 || processStartTicks(pid) !== startTicks) return false;
  try {
    process.kill(-pid, "SIGKILL");
    return true;
  } catch {
    return false;
  }
}
