// The executor interface: the server decides, executors do. The operation runner hands an
// executor one attempt of one operation and records whatever outcome it returns.
import type { Artifact } from "../gen/agentmachine/v1/artifact_pb.js";
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";
import type { Operation, StopCause } from "../gen/agentmachine/v1/operation_pb.js";
import type { OutputStreamName } from "../store/store.js";

export interface Attempt {
  operation: Operation;
  /** 1 for the first attempt. */
  attempt: number;
  /** The operation's private directory under the data dir; created by the runner. */
  workspace: string;
  /** Aborted when the operation is cancelled; the executor stops its work and returns "cancelled". */
  signal: AbortSignal;
  /**
   * Variables the server sets for the attempt: `AMCTL_SERVER`, `AMCTL_TOKEN` (the attempt's own
   * execution credential) and `AMCTL_OPERATION`. They win over the spec's env.
   */
  env: Readonly<Record<string, string>>;
  /** Records a progress event (persisted, then published). */
  progress(message: string, percent?: number): void;
  /** Records the process group the attempt started, so a restart after a crash can stop it. */
  spawned(pid: number): void;
  /**
   * Optional. Hears, while the attempt runs, what it has used so far of the dimensions the
   * executor measures: the same fields and meaning as the outcome's `usage` (totals for this
   * attempt, not increments since the last report), at most every couple of seconds (the local
   * process executor reports every 2 s). The outcome's `usage` is the final word. Like
   * `progress`, it must not throw.
   */
  usage?(usage: Budget): void;
  /** What `Executor.reserve` returned for this attempt, for executors that reserve. */
  seat?: Seat;
  /**
   * Optional. Where an executor that runs a program sends its output as it is produced
   * (besides the workspace's log files), so that it outlives the workspace (OutputService).
   */
  output?: OutputSink;
}

/**
 * An attempt's output, kept elsewhere: the server's store, or (on a remote worker) the server.
 * Appends of one stream come in order, each at the offset where the previous one ended; the
 * last carries `end`. A rejection means the bytes were not kept (nor will later ones be).
 */
export interface OutputSink {
  append(stream: OutputStreamName, offset: bigint, data: Uint8Array, end?: { truncated: boolean }): Promise<void>;
}

/** Room an executor holds for one attempt between `reserve` and `run` (e.g. a remote worker's slot). */
export interface Seat {
  /** Who will run the attempt (a remote worker, `workers/{id}`), recorded on the operation. */
  worker: string;
  /** Gives the room back when the attempt will not run after all (the claim failed). */
  release(): void;
}

export type Outcome =
  | { kind: "completed"; artifact?: Artifact; message: string; usage?: Budget }
  /** `retryable` false means no further attempt can help (e.g. the program does not exist). */
  | { kind: "failed"; cause: StopCause; retryable: boolean; artifact?: Artifact; usage?: Budget }
  | { kind: "cancelled"; artifact?: Artifact; usage?: Budget };

export interface Executor {
  run(attempt: Attempt): Promise<Outcome>;
  /**
   * Optional: resolves once the executor has room for the operation's next attempt (a remote
   * worker that may run it is free), so the task stays queued, not running, while none has.
   * Rejects when `signal` is aborted first.
   */
  reserve?(operation: Operation, signal: AbortSignal): Promise<Seat>;
  /**
   * Optional: stops what an attempt of `operation` started by a previous server process (one
   * that crashed) may have left running, so it does not go on ungoverned. Resolves with what
   * it stopped, for the log, or undefined when nothing was left.
   */
  stopOrphan?(operation: Operation): Promise<string | undefined>;
}
