// Runs agent_machine.container.run through a container runtime's CLI (podman, docker, or one
// that takes the same flags), started without a shell with the command line that
// container-invocation.ts decides. What the CLI prints — the container's output and the
// runtime's own messages, such as an image pull — is captured into the workspace as a local
// process's output is; the wall clock comes from the budget; cancel stops the container by name.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync } from "node:fs";
import { availableParallelism, constants } from "node:os";
import { setTimeout as delay } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { ArtifactSchema } from "../gen/agentmachine/v1/artifact_pb.js";
import { BudgetDimension, BudgetSchema } from "../gen/agentmachine/v1/budget_pb.js";
import { StopCauseSchema, StopReason, type ContainerRunSpec, type Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import { CONTAINER_GID, CONTAINER_UID, containerInvocation, containerName, type Invocation } from "./container-invocation.js";
import { closeMountSources, MountUnavailable, openMountSources, type MountSource } from "../sandbox/mount-sources.js";
import type { Attempt, Executor, Outcome } from "./executor.js";
import type { LocalProcessOptions } from "./local-process.js";
import { captureAttemptOutput } from "./output-capture.js";

export interface ContainerExecutorOptions extends LocalProcessOptions {
  /** Absolute path of the runtime's CLI. */
  runtime: string;
}

/**
 * Variables the runtime's CLI reads to find its daemon, storage and configuration. They reach
 * the CLI only: the container gets the variables its `--env` flags name and no others.
 */
const RUNTIME_CLIENT_ENV = [
  "HOME",
  "XDG_RUNTIME_DIR",
  "XDG_CONFIG_HOME",
  "XDG_DATA_HOME",
  "DOCKER_HOST",
  "DOCKER_CONTEXT",
  "DOCKER_CONFIG",
  "DOCKER_CERT_PATH",
  "DOCKER_TLS_VERIFY",
  "CONTAINER_HOST",
  "CONTAINERS_CONF",
  "CONTAINERS_STORAGE_CONF",
];

/** How much longer than its own wait a runtime command may take before its daemon is taken to be stuck. */
const COMMAND_SLACK_MS = 10_000;

type Exit = { code: number | null; error?: undefined } | { code: null; error: Error };

function exitOf(child: ChildProcess): Promise<Exit> {
  return new Promise((resolveExit) => {
    // A failed spawn may report both "error" and "exit"; the first one counts.
    child.once("error", (error) => resolveExit({ code: null, error }));
    // Killed by a signal: the shell convention 128 + signal number.
    child.once("exit", (code, sig) => resolveExit({ code: code ?? (sig ? 128 + constants.signals[sig] : null) }));
  });
}

/**
 * Makes the workspace writable by the container's user (nobody), which owns nothing on the host.
 * A server running as root runs a rootful runtime, where the container's 65534 is the host's
 * 65534: the workspace is given to that user alone (mode 0700; root, the server, still writes the
 * output logs there). A server running as another user runs a rootless runtime, where 65534 is an
 * id mapped from the user's subordinate ids, or talks to a daemon: the workspace must then be
 * writable by everyone. Either way nobody else reaches it, since the data dir above it is the
 * server's alone (mode 0700); the container reaches it through its bind mount only.
 */
export function shareWorkspace(workspace: string, serverUid = process.getuid?.()): void {
  if (serverUid === 0) {
    chownSync(workspace, CONTAINER_UID, CONTAINER_GID);
    chmodSync(workspace, 0o700);
  } else {
    chmodSync(workspace, 0o777);
  }
}

export class ContainerExecutor implements Executor {
  private readonly hostCpus = availableParallelism();

  constructor(private readonly options: ContainerExecutorOptions) {}

  private environment(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const name of [...this.options.envAllowlist, ...RUNTIME_CLIENT_ENV]) {
      if (process.env[name] !== undefined) env[name] = process.env[name];
    }
    return env;
  }

  /** Runs `<runtime> args…`; whether it succeeded does not matter to the caller, which watches the run itself. */
  private command(args: string[], waitMs: number): Promise<void> {
    return new Promise((resolveCommand) => {
      execFile(this.options.runtime, args, { env: this.environment(), timeout: waitMs + COMMAND_SLACK_MS }, () => resolveCommand());
    });
  }

  /**
   * Stops the container by name — killing the CLI would leave it running under the daemon — with
   * the grace a local process gets: `stop` (SIGTERM, then SIGKILL after the grace); `kill` if the
   * run still goes on, as it does when the container was created after `stop` looked for it; and
   * if even that does not end it, the CLI is killed and the container removed.
   */
  private async terminate(child: ChildProcess, exited: Promise<Exit>, name: string): Promise<void> {
    const { killGraceMs } = this.options;
    const ended = (ms: number): Promise<boolean> => Promise.race([exited.then(() => true), delay(ms, false, { ref: false })]);
    const graceSeconds = Math.max(1, Math.ceil(killGraceMs / 1000));
    await this.command(["stop", "-t", String(graceSeconds), name], graceSeconds * 1000);
    if (await ended(killGraceMs)) return;
    await this.command(["kill", name], 0);
    if (await ended(killGraceMs)) return;
    child.kill("SIGKILL");
    await this.command(["rm", "--force", name], 0);
  }

  /** A container outlives the CLI that started it (it runs under the daemon): removed by name. */
  async stopOrphan(operation: Operation): Promise<string> {
    const name = containerName(operation);
    await this.command(["rm", "--force", name], 0);
    return `container ${name}`;
  }

  run(attempt: Attempt): Promise<Outcome> {
    const spec = attempt.operation.spec?.kind;
    if (spec?.case !== "containerRun") throw new Error("ContainerExecutor runs container_run only");
    return this.runContainer(attempt, spec.value);
  }

  private async runContainer(attempt: Attempt, spec: ContainerRunSpec): Promise<Outcome> {
    const { operation, workspace } = attempt;
    const wallClockSeconds = Number(operation.requestedBudget?.wallClockSeconds ?? 0n) || this.options.defaultWallClockSeconds;
    shareWorkspace(workspace);
    // Opened and checked as a sandbox's are; the runtime takes paths, not descriptors, so a host
    // path swapped between this check and the runtime's own mount is not caught (docs/mounts.md).
    let mounts: MountSource[];
    try {
      mounts = openMountSources(spec.mounts, workspace, (dir) => shareWorkspace(dir));
    } catch (error) {
      const message =
        error instanceof MountUnavailable ? error.message : `cannot open a mount's host path: ${(error as NodeJS.ErrnoException).code ?? "error"}`;
      return { kind: "failed", cause: create(StopCauseSchema, { reason: StopReason.MOUNT_FAILED, message }), retryable: false };
    }
    try {
      return await this.runInvocation(
        attempt,
        spec,
        containerInvocation({ operation, workspace, wallClockSeconds, hostCpus: this.hostCpus, mounts }),
        wallClockSeconds,
      );
    } finally {
      closeMountSources(mounts);
    }
  }

  private async runInvocation(attempt: Attempt, spec: ContainerRunSpec, invocation: Invocation, wallClockSeconds: number): Promise<Outcome> {
    const { signal } = attempt;

    const started = Date.now();
    const child = spawn(this.options.runtime, invocation.args, { env: this.environment(), stdio: ["ignore", "pipe", "pipe"] });
    const exited = exitOf(child);
    const { stdout, stderr } = captureAttemptOutput(child, attempt, this.options.outputLimitBytes);

    let stopReason: "cancelled" | "wall_clock" | undefined;
    let termination: Promise<void> | undefined;
    const stop = (reason: "cancelled" | "wall_clock"): void => {
      if (stopReason !== undefined) return;
      stopReason = reason;
      termination = this.terminate(child, exited, invocation.name);
    };
    const onAbort = (): void => stop("cancelled");
    signal.addEventListener("abort", onAbort);
    if (signal.aborted) onAbort();
    const wallClock = setTimeout(() => stop("wall_clock"), wallClockSeconds * 1000);

    const exit = await exited;
    clearTimeout(wallClock);
    signal.removeEventListener("abort", onAbort);
    await Promise.all([stdout.done, stderr.done, termination]);

    // What this attempt used of the budget dimensions the executor measures.
    const usage = create(BudgetSchema, { wallClockSeconds: BigInt(Math.ceil((Date.now() - started) / 1000)) });
    const artifact = create(ArtifactSchema, {
      kind: {
        case: "containerExecutionRecord",
        value: {
          operationType: OperationType.CONTAINER_RUN,
          imageDigest: spec.image,
          ...(exit.code !== null ? { exitCode: exit.code } : {}),
          argv: [this.options.runtime, ...invocation.recordedArgs],
          usage,
          stdoutBytes: BigInt(stdout.bytes()),
          stderrBytes: BigInt(stderr.bytes()),
          outputTruncated: stdout.truncated() || stderr.truncated(),
        },
      },
    });
    if (exit.error !== undefined) {
      const cause = create(StopCauseSchema, {
        reason: StopReason.SPAWN_FAILED,
        message: `cannot start ${this.options.runtime}: ${(exit.error as NodeJS.ErrnoException).code ?? exit.error.message}`,
      });
      return { kind: "failed", cause, retryable: false, artifact, usage };
    }
    if (stopReason === "cancelled") return { kind: "cancelled", artifact, usage };
    if (stopReason === "wall_clock") {
      const cause = create(StopCauseSchema, {
        reason: StopReason.BUDGET_EXHAUSTED,
        message: `wallClockSeconds: ran longer than ${wallClockSeconds} s`,
        dimension: BudgetDimension.WALL_CLOCK_SECONDS,
      });
      return { kind: "failed", cause, retryable: false, artifact, usage };
    }
    if (exit.code === 0) return { kind: "completed", artifact, message: "container exited with code 0", usage };
    const cause = create(StopCauseSchema, { reason: StopReason.EXIT_CODE, message: `container exited with code ${exit.code ?? "unknown"}` });
    return { kind: "failed", cause, retryable: true, artifact, usage };
  }
}
