// Measures a process group from /proc, one sample at a time: the CPU time it has used so far,
// exited members included, and the memory it holds now. The group, not the leader's
// descendants, because the group is what a stop kills (kill(-pgid)).
//
// CPU time. Each member counts its own time plus that of the children it has reaped (cutime
// and cstime carry a reaped child's own and reaped children's time up to its parent, so every
// process that exited and was reaped inside the group is counted once, by a living member).
// A member that is gone and had no member for a parent at its last sample was reaped outside
// the group (by init after its parent died, or by the server: the leader) and keeps what was
// last seen of it. Not seen: a process's last moments before it leaves that way (at most one
// sampling period; for the leader that is the end of the attempt), and one that never lived
// through a sample and had nobody in the group to reap it. The total never goes back.
//
// Memory. The summed resident set (VmRSS) of the members: pages shared between them (libraries,
// copy-on-write after fork) count once per process, so it overstates rather than understates.
//
// Cost: a sample reads /proc/*/stat of every process on the machine (about 2 ms per 100
// processes) to find the members, and /proc/PID/status of each member; a sandbox with cgroups
// lists its members itself, and only theirs are read.
import { readdirSync } from "node:fs";
import { readResidentBytes, readStat, type ProcStat } from "./proc-stat.js";

export interface GroupSample {
  /** CPU time the group has used since it started, in clock ticks. */
  cpuTicks: number;
  /** Resident memory of the group now. */
  residentBytes: number;
}

interface LastSeen {
  ppid: number;
  /** Its own time and its reaped children's. */
  ticks: number;
}

export interface Member extends ProcStat {
  residentBytes: number;
}

/** Every process on the machine now, from /proc. */
function allProcesses(): ProcStat[] {
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return []; // not Linux
  }
  const processes: ProcStat[] = [];
  for (const entry of entries) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const stat = readStat(pid);
    if (stat !== undefined) processes.push(stat);
  }
  return processes;
}

const withMemory = (stat: ProcStat): Member => ({ ...stat, residentBytes: readResidentBytes(stat.pid) });

/** The processes with these pids that still run (a cgroup's members, say). */
export function processesWithPids(pids: readonly number[]): Member[] {
  return pids.flatMap((pid) => {
    const stat = readStat(pid);
    return stat === undefined ? [] : [withMemory(stat)];
  });
}

/** The processes of group `pgid` now. */
export function groupMembers(pgid: number): Member[] {
  return allProcesses()
    .filter((stat) => stat.pgrp === pgid)
    .map(withMemory);
}

/**
 * Process `root` and all its descendants now. For a sandbox this is its whole PID namespace:
 * an orphan inside is re-parented to the namespace's init, itself a descendant of `root`, so
 * a `setsid` or double-forked process is still found (it left the process group, not the tree).
 */
export function treeMembers(root: number): Member[] {
  const processes = allProcesses();
  const inTree = new Set([root]);
  // Parents usually have lower pids, but pids wrap: repeat until nothing is added.
  for (let grew = true; grew; ) {
    grew = false;
    for (const stat of processes) {
      if (!inTree.has(stat.pid) && inTree.has(stat.ppid)) {
        inTree.add(stat.pid);
        grew = true;
      }
    }
  }
  return processes.filter((stat) => inTree.has(stat.pid)).map(withMemory);
}

export class ProcessGroupSampler {
  /** Members at the last sample, by pid and start time (a pid may be reused). */
  private seen = new Map<string, LastSeen>();
  /** Time of members that left without a member to reap them. */
  private departedTicks = 0;
  private cpuTicks = 0;

  constructor(
    private readonly pgid: number,
    private readonly read: (pgid: number) => Member[] = groupMembers,
  ) {}

  sample(): GroupSample {
    const members = this.read(this.pgid);
    const pids = new Set(members.map((member) => member.pid));
    const now = new Map<string, LastSeen>(members.map((m) => [`${m.pid}:${m.startTicks}`, { ppid: m.ppid, ticks: m.cpuTicks + m.childCpuTicks }]));
    for (const [key, last] of this.seen) {
      if (!now.has(key) && !pids.has(last.ppid)) this.departedTicks += last.ticks;
    }
    this.seen = now;
    let living = 0;
    for (const { ticks } of now.values()) living += ticks;
    // A member's reaped children can vanish from its count (e.g. with SIGCHLD ignored the kernel
    // reaps them without adding their time): keep the highest total seen.
    this.cpuTicks = Math.max(this.cpuTicks, this.departedTicks + living);
    let residentBytes = 0;
    for (const member of members) residentBytes += member.residentBytes;
    return { cpuTicks: this.cpuTicks, residentBytes };
  }
}
