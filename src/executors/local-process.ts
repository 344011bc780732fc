// Runs agent_machine.execution.start as a real local process: argv without a shell, in the
// operation's workspace, with an allowlisted environment, output captured to files up to a
// cap, a wall-clock limit from the budget, and cancel that stops the whole process group
// (SIGTERM, then SIGKILL after a grace period).
//
// Progress protocol: the process may write lines of JSON to file descriptor 3 (also named in
// the environment as AMCTL_PROGRESS_FD=3), e.g. {"percent": 40, "message": "indexing"}.
// Either key may be left out; lines that are not such JSON are ignored.
import { spawn } from "node:child_process";
import { createWriteStream, mkdirSync } from "node:fs";
import { constants } from "node:os";
import { join, relative, resolve } from "node:path";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { ArtifactSchema } from "../gen/agentmachine/v1/artifact_pb.js";
import { BudgetDimension, BudgetSchema } from "../gen/agentmachine/v1/budget_pb.js";
import { StopCauseSchema, type ExecutionStartSpec } from "../gen/agentmachine/v1/operation_pb.js";
import type { Attempt, Executor, Outcome } from "./executor.js";

export interface LocalProcessOptions {
  /** Names of the server's environment variables a process may inherit. */
  envAllowlist: readonly string[];
  /** Bytes of stdout and of stderr kept; the rest is dropped and `output_truncated` set. */
  outputLimitBytes: number;
  /** Wall clock when the budget sets none. */
  defaultWallClockSeconds: number;
  /** Between SIGTERM and SIGKILL. */
  killGraceMs: number;
}

export const PROGRESS_FD = 3;

/** The working directory inside the workspace, or undefined if `relativeDir` escapes it. */
export function workingDirectory(workspace: string, relativeDir: string): string | undefined {
  const dir = resolve(workspace, relativeDir);
  const rel = relative(workspace, dir);
  return rel.startsWith("..") || resolve(rel) === rel ? undefined : dir;
}

function captureTo(stream: Readable, path: string, limit: number): { bytes: () => number; truncated: () => boolean; done: Promise<void> } {
  const file = createWriteStream(path);
  let bytes = 0;
  let truncated = false;
  stream.on("data", (chunk: Buffer) => {
    const room = limit - bytes;
    if (room <= 0) {
      truncated = true;
      return;
    }
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    truncated ||= kept.length < chunk.length;
    bytes += kept.length;
    file.write(kept);
  });
  const done = new Promise<void>((resolveDone) => stream.on("close", () => file.end(resolveDone)));
  return { bytes: () => bytes, truncated: () => truncated, done };
}

export class LocalProcessExecutor implements Executor {
  constructor(private readonly options: LocalProcessOptions) {}

  run(attempt: Attempt): Promise<Outcome> {
    const spec = attempt.operation.spec?.spec;
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

  private runProcess(attempt: Attempt, spec: ExecutionStartSpec): Promise<Outcome> {
    const { workspace, signal } = attempt;
    const cwd = workingDirectory(workspace, spec.workingDirectory) ?? workspace;
    mkdirSync(cwd, { recursive: true });
    const wallClockSeconds = Number(attempt.operation.requestedBudget?.wallClockSeconds ?? 0n) || this.options.defaultWallClockSeconds;
    const [program, ...args] = spec.argv as [string, ...string[]];

    return new Promise<Outcome>((resolveOutcome) => {
      const child = spawn(program, args, {
        cwd,
        env: this.environment(spec, attempt),
        stdio: ["ignore", "pipe", "pipe", "pipe"],
        detached: true, // its own process group, so a kill reaches every descendant
      });
      if (child.pid !== undefined) attempt.spawned(child.pid);
      const stdout = captureTo(child.stdout!, join(workspace, `stdout.${attempt.attempt}.log`), this.options.outputLimitBytes);
      const stderr = captureTo(child.stderr!, join(workspace, `stderr.${attempt.attempt}.log`), this.options.outputLimitBytes);
      createInterface({ input: child.stdio[PROGRESS_FD] as Readable }).on("line", (line) => {
        try {
          const report = JSON.parse(line) as { percent?: unknown; message?: unknown };
          const percent = typeof report.percent === "number" ? Math.max(0, Math.min(100, Math.round(report.percent))) : undefined;
          attempt.progress(typeof report.message === "string" ? report.message.slice(0, 1000) : "", percent);
        } catch {
          // not a progress line
        }
      });

      let stopReason: "cancelled" | "wall_clock" | undefined;
      const killGroup = (sig: NodeJS.Signals): void => {
        try {
          if (child.pid !== undefined) process.kill(-child.pid, sig);
        } catch {
          // already gone
        }
      };
      const stop = (reason: "cancelled" | "wall_clock"): void => {
        if (stopReason !== undefined) return;
        stopReason = reason;
        killGroup("SIGTERM");
        setTimeout(() => killGroup("SIGKILL"), this.options.killGraceMs).unref();
      };
      const onAbort = (): void => stop("cancelled");
      signal.addEventListener("abort", onAbort);
      if (signal.aborted) onAbort();
      const wallClock = setTimeout(() => stop("wall_clock"), wallClockSeconds * 1000);
      const started = Date.now();

      let finished = false;
      const finish = async (exitCode: number | null, spawnError?: Error): Promise<void> => {
        if (finished) return; // a failed spawn may report both "error" and "exit"
        finished = true;
        clearTimeout(wallClock);
        signal.removeEventListener("abort", onAbort);
        // Whatever the leader did, nothing of the group may outlive the attempt.
        killGroup("SIGKILL");
        await Promise.all([stdout.done, stderr.done]);
        // What this attempt used of the budget dimensions the executor measures.
        const usage = create(BudgetSchema, { wallClockSeconds: BigInt(Math.ceil((Date.now() - started) / 1000)) });
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
        if (spawnError !== undefined) {
          const cause = create(StopCauseSchema, { reason: "spawn_failed", message: `cannot start ${program}: ${(spawnError as NodeJS.ErrnoException).code ?? spawnError.message}` });
          resolveOutcome({ kind: "failed", cause, retryable: false, artifact, usage });
        } else if (stopReason === "cancelled") {
          resolveOutcome({ kind: "cancelled", artifact, usage });
        } else if (stopReason === "wall_clock") {
          const cause = create(StopCauseSchema, {
            reason: "budget_exhausted",
            message: `wallClockSeconds: ran longer than ${wallClockSeconds} s`,
            dimension: BudgetDimension.WALL_CLOCK_SECONDS,
          });
          resolveOutcome({ kind: "failed", cause, retryable: false, artifact, usage });
        } else if (exitCode === 0) {
          resolveOutcome({ kind: "completed", artifact, message: "process exited with code 0", usage });
        } else {
          const cause = create(StopCauseSchema, { reason: "exit_code", message: `process exited with code ${exitCode ?? "unknown"}` });
          resolveOutcome({ kind: "failed", cause, retryable: true, artifact, usage });
        }
      };
      child.once("error", (error) => void finish(null, error));
      // Killed by a signal: the shell convention 128 + signal number.
      child.once("exit", (code, sig) => void finish(code ?? (sig ? 128 + constants.signals[sig] : null)));
    });
  }
}
