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
// processes) to find the members, and /proc/PID/status of each member.
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

/** The processes of group `pgid` now, from /proc. */
function membersOf(pgid: number): Member[] {
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return []; // not Linux
  }
  const members: Member[] = [];
  for (const entry of entries) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const stat = readStat(pid);
    if (stat?.pgrp === pgid) members.push({ ...stat, residentBytes: readResidentBytes(pid) });
  }
  return members;
}

export class ProcessGroupSampler {
  /** Members at the last sample, by pid and start time (a pid may be reused). */
  private seen = new Map<string, LastSeen>();
  /** Time of members that left without a member to reap them. */
  private departedTicks = 0;
  private cpuTicks = 0;

  constructor(
    private readonly pgid: number,
    private readonly read: (pgid: number) => Member[] = membersOf,
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
