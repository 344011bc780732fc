// The kernel's share in enforcing compute seconds: RLIMIT_CPU on a group's leader, set with
// util-linux prlimit(1) because Node cannot call setrlimit. No privilege is needed to lower a
// limit of one's own user's process. The limit is per process: each process the leader starts
// afterwards inherits it and gets the whole allowance for itself, so it stops a single runaway
// process at the exact second, and the measurement of the whole group (process-group.ts) does
// the rest. Soft at the budget, hard a second later: at the soft limit the kernel sends
// SIGXCPU, which names the cause (at the hard one it would send SIGKILL, which does not).
//
// Set right after spawn, so the leader runs its first moments without it; where prlimit is
// not installed, or the process is already gone, nothing is set and measurement alone enforces.
import { execFile } from "node:child_process";

/** The signal of a process stopped by its CPU time limit. */
export const CPU_LIMIT_SIGNAL: NodeJS.Signals = "SIGXCPU";

/** Limits `pid` to `seconds` of CPU time; 0 sets no limit. */
export function limitCpuSeconds(pid: number, seconds: number): void {
  if (seconds <= 0) return;
  execFile("prlimit", ["--pid", String(pid), `--cpu=${seconds}:${seconds + 1}`], () => {
    // Best effort, see above.
  });
}
