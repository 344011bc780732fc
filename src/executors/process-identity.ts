// Identifies a process across a server crash: its id plus its start time in clock ticks since
// boot (field 22 of /proc/PID/stat), so a later process that reused the id is never mistaken
// for it. Linux only; elsewhere identity is unknown and orphans cannot be stopped.
import { readStat } from "../process/proc-stat.js";

export function processStartTicks(pid: number): bigint | undefined {
  const stat = readStat(pid);
  return stat === undefined || stat.state === "Z" ? undefined : stat.startTicks;
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
