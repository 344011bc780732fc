// Reads the kernel's per-process records under /proc (Linux; see proc(5)): /proc/PID/stat for
// identity, group and CPU time, /proc/PID/status for resident memory. Elsewhere every read is
// undefined, and what is measured from them reads as zero.
import { readFileSync } from "node:fs";

/**
 * Clock ticks per second of the times in /proc/PID/stat (USER_HZ, sysconf(_SC_CLK_TCK)). Node
 * cannot ask sysconf; the kernel fixes USER_HZ at 100 in its ABI on every architecture Node
 * runs on, independently of the kernel's own tick rate.
 */
export const CLOCK_TICKS_PER_SECOND = 100;

export interface ProcStat {
  pid: number;
  /** One letter: R running, S sleeping, Z zombie (exited, not yet reaped), … */
  state: string;
  ppid: number;
  /** Process group id. */
  pgrp: number;
  /** CPU time of the process itself, all its threads, user and system (utime + stime), in clock ticks. */
  cpuTicks: number;
  /** CPU time of the children it has waited for, and of theirs (cutime + cstime), in clock ticks. */
  childCpuTicks: number;
  /** When it started, in clock ticks since boot: with the pid, it names the process for good. */
  startTicks: bigint;
}

/** Parses the one line of /proc/PID/stat; undefined if it is not one. */
export function parseStat(text: string): ProcStat | undefined {
  // The command name (field 2) may hold spaces and parentheses: count fields after its last ")".
  const close = text.lastIndexOf(")");
  const pid = Number.parseInt(text, 10);
  if (close < 0 || !Number.isInteger(pid)) return undefined;
  // fields[0] is field 3 of proc(5).
  const fields = text.slice(close + 2).split(" ");
  const tick = (field: number): number => Number(fields[field - 3]);
  const startTicks = fields[22 - 3];
  if (startTicks === undefined || !/^\d+$/.test(startTicks)) return undefined;
  return {
    pid,
    state: fields[0]!,
    ppid: tick(4),
    pgrp: tick(5),
    cpuTicks: tick(14) + tick(15),
    childCpuTicks: tick(16) + tick(17),
    startTicks: BigInt(startTicks),
  };
}

/** Resident memory from the text of /proc/PID/status (VmRSS, in kB); 0 when it has none, as a zombie or a kernel thread. */
export function parseResidentBytes(status: string): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  return match ? Number(match[1]) * 1024 : 0;
}

function readProc(pid: number, file: "stat" | "status"): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, "utf8");
  } catch {
    return undefined; // gone, or not Linux
  }
}

export function readStat(pid: number): ProcStat | undefined {
  const text = readProc(pid, "stat");
  return text === undefined ? undefined : parseStat(text);
}

export function readResidentBytes(pid: number): number {
  const text = readProc(pid, "status");
  return text === undefined ? 0 : parseResidentBytes(text);
}
