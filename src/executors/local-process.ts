// Runs agent_machine.execution.start as a real local process: argv without a shell, in the
// operation's workspace, with an allowlisted environment, output captured to files up to a
// cap, the budget enforced on its whole process group, and cancel that stops the whole group
// (SIGTERM, then SIGKILL after a grace period).
//
// Progress protocol: the process may write lines of JSON to file descriptor 3 (also named in
// the environment as AMCTL_PROGRESS_FD=3), e.g. {"percent": 40, "message": "indexing"}.
// Either key may be left out; lines that are not such JSON are ignored.
//
// Budget. The operation's requested budget bounds each attempt; usage-meter.ts measures every
// 250 ms:
//   cpuGpuComputeSeconds  CPU time of the process group from /proc, exited members included;
//                         besides, the kernel's RLIMIT_CPU on the leader (cpu-limit.ts, where
//                         prlimit is installed) stops a single process at the limit exactly
//   sandboxMemoryBytes    the group's summed resident memory, measured (RLIMIT_AS would limit
//                         address space, which runtimes reserve far beyond what they use)
//   localDiskBytes        bytes under the workspace, measured; the capture logs count only
//                         beyond the output limit (the most the server writes to them)
//   wallClockSeconds      time since spawn, measured
// Going over any of them kills the group at once, without the grace a cancel gets (it would be
// spent beyond the budget), and fails the attempt, not retryable, with cause
// `budget_exhausted` naming the dimension; so does a use over a limit found only when the
// process has ended (e.g. files written in its last moments). A limit of 0 is none: admission
// fills in the server's default for every dimension a request leaves unset, so it is not
// expected here (the wall clock alone falls back to `defaultWallClockSeconds`).
// Output beyond the cap is not a budget: it is dropped while the process goes on, and an
// execution that exits 0 completes with `output_truncated`.
//
// Usage: the outcome carries what the attempt used (wall-clock and compute seconds rounded
// up, peak memory, the workspace's final size), and `attempt.usage` hears it as it accrues.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import { constants } from "node:os";
import { relative, resolve } from "node:path";
import type { Readable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { ArtifactSchema } from "../gen/agentmachine/v1/artifact_pb.js";
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";
import { StopCauseSchema, StopReason, type ExecutionStartSpec, type Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { CPU_LIMIT_SIGNAL, limitCpuSeconds } from "./cpu-limit.js";
import type { Attempt, Executor, Outcome } from "./executor.js";
import { captureAttemptOutput, captureLogPath } from "./output-capture.js";
import { killedWithParent } from "./parent-death.js";
import { killOrphanGroup } from "./process-identity.js";
import { readProgressLines } from "./progress-lines.js";
import { treeMembers } from "../process/process-group.js";
import { networkEgressAllowed } from "./container-invocation.js";
import { resolveExecutable } from "../process/resolve-executable.js";
import type { PreparedSandbox, Sandboxes } from "../sandbox/sandbox.js";
import { MountUnavailable } from "../sandbox/mount-sources.js";
import { exhaustion, firstExhausted, usageBudget, UsageMeter, type Exhaustion, type Metered } from "./usage-meter.js";

export interface LocalProcessOptions {
  /** Names of the server's environment variables a process may inherit. */
  envAllowlist: readonly string[];
  /** Bytes of stdout and of stderr kept; the rest is dropped and `output_truncated` set. */
  outputLimitBytes: number;
  /** Wall clock when the budget sets none. */
  defaultWallClockSeconds: number;
  /** Between SIGTERM and SIGKILL. */
  killGraceMs: number;
  /** On a remote worker: the process is killed when the worker dies (parent-death.ts). */
  killWithParent?: boolean;
  /** Where executions are confined (src/sandbox/); unset only with `--unsafe-no-sandbox`. */
  sandboxes?: Sandboxes;
}

export const PROGRESS_FD = 3;
/** How long output pipes are still read after the process ended (see `finish`). */
const PIPE_DRAIN_MS = 1000;

/** How an attempt's process starts: spawned here, or a prepared sandbox's bwrap handed its options. */
interface Launch {
  start(): ChildProcess;
  sandbox?: PreparedSandbox;
}

function signalProcess(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone meanwhile
  }
}

/** An error's code (EACCES, ENOENT…), or its class: never its message, which may quote a value. */
function errorCode(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === "string" ? code : error instanceof Error ? error.name : "unknown error";
}

/** The working directory inside the workspace, or undefined if `relativeDir` escapes it. */
export function workingDirectory(workspace: string, relativeDir: string): string | undefined {
  const dir = resolve(workspace, relativeDir);
  const rel = relative(workspace, dir);
  return rel.startsWith("..") || resolve(rel) === rel ? undefined : dir;
}

export class LocalProcessExecutor implements Executor {
  constructor(private readonly options: LocalProcessOptions) {}

  /** The process group the attempt recorded (pid and start time), if that process still runs. */
  stopOrphan(operation: Operation): Promise<string | undefined> {
    const artifact = operation.artifact?.kind;
    if (artifact?.case !== "localAgentExecution" || artifact.value.processId === 0) return Promise.resolve(undefined);
    const { processId, processStartTicks } = artifact.value;
    return Promise.resolve(killOrphanGroup(processId, processStartTicks) ? `process group ${processId}` : undefined);
  }

  async run(attempt: Attempt): Promise<Outcome> {
    const spec = attempt.operation.spec?.kind;
    if (spec?.case !== "executionStart") throw new Error("LocalProcessExecutor runs execution_start only");
    return this.runProcess(attempt, spec.value);
  }

  private environment(spec: ExecutionStartSpec, { workspace, env: fromServer }: Attempt): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const name of this.options.envAllowlist) {
      if (process.env[name] !== undefined) env[name] = process.env[name];
    }
    return { ...env, HOME: workspace, AMCTL_PROGRESS_FD: String(PROGRESS_FD), ...spec.env, ...fromServer };
  }

  /**
   * Everything before the process runs: the working directory, the program's path, the sandbox.
   * A step that fails ends the attempt with a cause naming the step (the error's code, never
   * its message, which may quote an argument or a value of the environment).
   */
  private async launch(attempt: Attempt, spec: ExecutionStartSpec, limits: Metered): Promise<Launch | Outcome> {
    const { workspace } = attempt;
    const cwd = workingDirectory(workspace, spec.workingDirectory) ?? workspace;
    const env = this.environment(spec, attempt);
    const [program, ...args] = spec.argv as [string, ...string[]];
    const failed = (reason: StopReason, message: string): Outcome => ({
      kind: "failed",
      cause: create(StopCauseSchema, { reason, message }),
      retryable: false,
    });
    try {
      mkdirSync(cwd, { recursive: true });
    } catch (error) {
      return failed(StopReason.WORKSPACE_UNAVAILABLE, `cannot create the working directory: ${errorCode(error)}`);
    }
    const sandboxes = this.options.sandboxes;
    if (sandboxes === undefined && spec.mounts.length > 0) {
      return failed(StopReason.MOUNT_FAILED, "mounts need the sandbox, and this server runs executions unconfined (--unsafe-no-sandbox)");
    }
    if (sandboxes === undefined) {
      const { file, args: fileArgs } = (this.options.killWithParent === true ? killedWithParent(program, args) : undefined) ?? { file: program, args };
      return {
        start: () =>
          spawn(file, fileArgs, {
            cwd,
            env,
            stdio: ["ignore", "pipe", "pipe", "pipe"],
            detached: true, // its own process group, so a kill reaches every descendant
          }),
      };
    }
    let executable: string;
    try {
      executable = program.includes("/") ? resolveExecutable(resolve(cwd, program)) : resolveExecutable(program, env.PATH ?? "");
    } catch {
      return failed(StopReason.SPAWN_FAILED, `cannot start ${program}: ENOENT`);
    }
    const server = new URL(attempt.env.AMCTL_SERVER ?? "http://127.0.0.1:0");
    const egressCredential = networkEgressAllowed(attempt.operation) ? attempt.env.AMCTL_TOKEN : undefined;
    try {
      const sandbox = await sandboxes.prepare({
        workspace,
        cwd,
        argv: [executable, ...args],
        env: Object.fromEntries(Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined)),
        plane: { host: server.hostname.replace(/^\[|\]$/g, ""), port: Number(server.port) },
        ...(egressCredential !== undefined ? { egressCredential } : {}),
        cpuSeconds: limits.cpuGpuComputeSeconds,
        memoryBytes: limits.sandboxMemoryBytes,
        mounts: spec.mounts,
      });
      return {
        start: () => {
          sandbox.start();
          return sandbox.child;
        },
        sandbox,
      };
    } catch (error) {
      return error instanceof MountUnavailable
        ? failed(StopReason.MOUNT_FAILED, error.message)
        : failed(StopReason.SANDBOX_FAILED, `cannot set up the sandbox: ${errorCode(error)}`);
    }
  }

  private async runProcess(attempt: Attempt, spec: ExecutionStartSpec): Promise<Outcome> {
    const limits = this.limits(attempt.operation.requestedBudget);
    const launch = await this.launch(attempt, spec, limits);
    if ("kind" in launch) return launch;
    try {
      return await this.supervise(attempt, spec, limits, launch);
    } finally {
      launch.sandbox?.close();
    }
  }

  private supervise(attempt: Attempt, spec: ExecutionStartSpec, limits: Metered, launch: Launch): Promise<Outcome> {
    const { workspace, signal } = attempt;
    const { sandbox } = launch;
    const program = spec.argv[0]!;

    return new Promise<Outcome>((resolveOutcome) => {
      const child = launch.start();
      // A pipe whose other end dies unread (a sandbox killed while it starts) reports
      // ECONNRESET: that ends the pipe, nothing more; its close still ends the capture.
      for (const pipe of child.stdio) pipe?.on("error", () => pipe.destroy());
      const { stdout, stderr } = captureAttemptOutput(child, attempt, this.options.outputLimitBytes);
      // At most 64 KiB a line: a longer one is dropped as it arrives (progress-lines.ts).
      readProgressLines(child.stdio[PROGRESS_FD] as Readable, (line) => {
        try {
          const report = JSON.parse(line) as { percent?: unknown; message?: unknown };
          const percent = typeof report.percent === "number" ? Math.max(0, Math.min(100, Math.round(report.percent))) : undefined;
          attempt.progress(typeof report.message === "string" ? report.message.slice(0, 1000) : "", percent);
        } catch {
          // not a progress line
        }
      });

      let stopped: "cancelled" | Exhaustion | undefined;
      const killGroup = (sig: NodeJS.Signals): void => {
        // A sandbox's processes are in no group of ours (a new session): each is killed,
        // bwrap's init among them, which ends the PID namespace — all of its cgroups' members,
        // or the process tree where it has none.
        if (sig === "SIGKILL" && sandbox !== undefined && child.pid !== undefined && !sandbox.killAll()) {
          for (const member of treeMembers(child.pid)) signalProcess(member.pid, sig);
        }
        try {
          if (child.pid !== undefined) process.kill(-child.pid, sig);
        } catch {
          // already gone
        }
      };
      // A cancel's SIGTERM goes to the program and what it started. In a sandbox, not to bwrap
      // or the namespace's init (the pid and its child): either one's death ends the whole
      // namespace at once, leaving no grace.
      const terminate = (): void => {
        if (sandbox === undefined || child.pid === undefined) {
          killGroup("SIGTERM");
          return;
        }
        const root = child.pid;
        for (const member of treeMembers(root)) {
          if (member.pid !== root && member.ppid !== root) signalProcess(member.pid, "SIGTERM");
        }
      };
      const stop = (why: "cancelled" | Exhaustion): void => {
        if (stopped !== undefined) return;
        stopped = why;
        if (why !== "cancelled") {
          killGroup("SIGKILL");
          return;
        }
        terminate();
        setTimeout(() => killGroup("SIGKILL"), this.options.killGraceMs).unref();
      };
      const onAbort = (): void => stop("cancelled");
      signal.addEventListener("abort", onAbort);
      if (signal.aborted) onAbort();
      const meter = new UsageMeter({
        workspace,
        diskAllowances: this.captureAllowances(workspace, attempt.attempt),
        limits,
        exhausted: stop,
        usage: (usage) => attempt.usage?.(usage),
      });
      if (child.pid !== undefined) {
        attempt.spawned(child.pid);
        // In a sandbox, the launcher sets the limit before the program runs.
        if (sandbox === undefined) limitCpuSeconds(child.pid, limits.cpuGpuComputeSeconds);
        meter.start(child.pid, sandbox !== undefined ? (root) => sandbox.members() ?? treeMembers(root) : undefined);
      }

      let finished = false;
      const finish = async (exit: { code: number | null; signal: NodeJS.Signals | null } | Error): Promise<void> => {
        if (finished) return; // a failed spawn may report both "error" and "exit"
        finished = true;
        signal.removeEventListener("abort", onAbort);
        meter.stop();
        // Whatever the leader did, nothing of the group may outlive the attempt. In a sandbox
        // the namespace died with its init already; its cgroups are emptied all the same, in
        // case bwrap's init outlived bwrap.
        const oomKilled = sandbox?.oomKilled() === true; // read before the cgroups go
        const cgroupPeakBytes = sandbox?.peakMemoryBytes() ?? 0;
        killGroup("SIGKILL");
        sandbox?.close();
        // Without a sandbox, a process that left the group (setsid) may still hold the output
        // pipes: they are read a moment longer, then let go, so the attempt still ends.
        const pipesClosed = Promise.all([stdout.done, stderr.done]);
        const late = setTimeout(() => {
          child.stdout?.destroy();
          child.stderr?.destroy();
          child.stdio[PROGRESS_FD]?.destroy();
        }, PIPE_DRAIN_MS);
        await pipesClosed;
        clearTimeout(late);
        const measured = await meter.final();
        // The cgroup's peak sees what sampling every 250 ms misses (an allocation the kernel
        // stopped between two samples); it counts page cache too, so it is the larger reading.
        const used = { ...measured, sandboxMemoryBytes: Math.max(measured.sandboxMemoryBytes, cgroupPeakBytes) };
        const usage = usageBudget(used);
        // Killed by a signal: the shell convention 128 + signal number.
        const exitCode = exit instanceof Error ? null : (exit.code ?? (exit.signal ? 128 + constants.signals[exit.signal] : null));
        const artifact = create(ArtifactSchema, {
          kind: {
            case: "localAgentExecution",
            value: {
              delegationRef: attempt.operation.delegation,
              budget: attempt.operation.requestedBudget,
              usage,
              ...(exitCode !== null ? { exitCode } : {}),
              stdoutBytes: BigInt(stdout.bytes()),
              stderrBytes: BigInt(stderr.bytes()),
              outputTruncated: stdout.truncated() || stderr.truncated(),
            },
          },
        });
        if (exit instanceof Error) {
          const cause = create(StopCauseSchema, { reason: StopReason.SPAWN_FAILED, message: `cannot start ${program}: ${errorCode(exit)}` });
          resolveOutcome({ kind: "failed", cause, retryable: false, artifact, usage });
          return;
        }
        if (stopped === "cancelled") {
          resolveOutcome({ kind: "cancelled", artifact, usage });
          return;
        }
        // bwrap reports a program killed by a signal as exit code 128 + its number, which a
        // program may also exit with: it counts as the CPU limit only when the sandbox did use
        // about that much CPU (the meter may miss at most one sampling period of it).
        const cpuLimited =
          exit.signal === CPU_LIMIT_SIGNAL ||
          (sandbox !== undefined &&
            limits.cpuGpuComputeSeconds > 0 &&
            exitCode === 128 + constants.signals[CPU_LIMIT_SIGNAL] &&
            used.cpuGpuComputeSeconds >= limits.cpuGpuComputeSeconds - 0.5);
        const exhausted =
          stopped ??
          (cpuLimited ? exhaustion("cpuGpuComputeSeconds", `a process reached its CPU time limit of ${limits.cpuGpuComputeSeconds} s`) : undefined) ??
          (oomKilled ? exhaustion("sandboxMemoryBytes", `the sandbox reached its memory limit of ${limits.sandboxMemoryBytes} bytes`) : undefined) ??
          firstExhausted(used, limits);
        if (exhausted !== undefined) {
          const cause = create(StopCauseSchema, { reason: StopReason.BUDGET_EXHAUSTED, ...exhausted });
          resolveOutcome({ kind: "failed", cause, retryable: false, artifact, usage });
        } else if (exitCode === 0) {
          resolveOutcome({ kind: "completed", artifact, message: "process exited with code 0", usage });
        } else {
          const cause = create(StopCauseSchema, { reason: StopReason.EXIT_CODE, message: `process exited with code ${exitCode ?? "unknown"}` });
          resolveOutcome({ kind: "failed", cause, retryable: true, artifact, usage });
        }
      };
      child.once("error", (error) => void finish(error));
      child.once("exit", (code, sig) => void finish({ code, signal: sig }));
      // A sandbox's bwrap was started before this attempt's listeners: it may have ended already.
      if (child.exitCode !== null || child.signalCode !== null) void finish({ code: child.exitCode, signal: child.signalCode });
    });
  }

  /** The limits of an attempt, in the budget's units; 0 is no limit. */
  private limits(budget: Budget | undefined): Metered {
    return {
      cpuGpuComputeSeconds: Number(budget?.cpuGpuComputeSeconds ?? 0n),
      localDiskBytes: Number(budget?.localDiskBytes ?? 0n),
      sandboxMemoryBytes: Number(budget?.sandboxMemoryBytes ?? 0n),
      wallClockSeconds: Number(budget?.wallClockSeconds ?? 0n) || this.options.defaultWallClockSeconds,
    };
  }

  /** The capture logs of this and earlier attempts count only beyond the output limit, the most the server writes to each. */
  private captureAllowances(workspace: string, attempt: number): Map<string, number> {
    const allowances = new Map<string, number>();
    for (let n = 1; n <= attempt; n += 1) {
      for (const stream of ["stdout", "stderr"] as const) allowances.set(captureLogPath(workspace, stream, n), this.options.outputLimitBytes);
    }
    return allowances;
  }
}
