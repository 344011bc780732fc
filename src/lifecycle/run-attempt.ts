// Running one attempt of a task: wait for a seat on an executor that reserves, claim the task
// (queued/retrying → running), issue the execution's credential, hand the attempt to its
// executor while recording what it reports, and turn its outcome into the next state.
import { mkdir } from "node:fs/promises";
import { planeEnvironment } from "../api/plane-environment.js";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ArtifactSchema } from "../gen/agentmachine/v1/artifact_pb.js";
import { OperationEventSchema, ProgressAttributesSchema, type OperationEvent } from "../gen/agentmachine/v1/event_pb.js";
import { StopReason, type Operation, type StopCause } from "../gen/agentmachine/v1/operation_pb.js";
import { EventType, OperationType, TaskState } from "../gen/agentmachine/v1/types_pb.js";
import type { Executor, Outcome, OutputSink, Seat } from "../executors/executor.js";
import { processStartTicks } from "../executors/process-identity.js";
import { workspaceOf } from "../executors/workspace-files.js";
import type { Logger } from "../api/logger.js";
import type { SlotKey, StoreOperations, StoreOutput } from "../store/store.js";
import { withAttemptUsage } from "../governance/budget-ledger.js";
import type { ExecutionCredential, ExecutionCredentials } from "../governance/execution-credentials.js";
import { inTaskSpan } from "../telemetry/tracer.js";
import { attemptAttributes, recordOutcome } from "./attempt-span.js";
import { isExecution } from "../model/execution-types.js";
import { closeOutput, openOutput, storeOutputSink } from "./attempt-output.js";
import type { AttemptRetries } from "./attempt-retries.js";
import { cause, transition, transitionChange } from "./task-transitions.js";

/** How soon an execution that found its caps full on other replicas tries its claim again. */
const CLAIM_RETRY_MS = 250;

/** What running an attempt needs of the server. */
export interface AttemptEnvironment {
  store: StoreOperations & StoreOutput;
  executors: ReadonlyMap<OperationType, Executor>;
  /** Operation workspaces live in `<dataDir>/workspaces/<id>`. */
  dataDir: string;
  log: Logger;
  /** Issues each execution attempt its own credential (see src/governance/execution-credentials.ts). */
  credentials: ExecutionCredentials;
  /** The URL executions reach this server at (AMCTL_SERVER); known once it listens. */
  serverAddress: () => string;
  /** Told the names of delegations the runner revoked (retired execution credentials). */
  revoked: (names: ReadonlySet<string>) => void;
  /** This runner's id (one per server process), recorded on the tasks it claims. */
  runnerId: string;
  /** Bytes of each output stream of an attempt the server keeps (attempt-output.ts). */
  outputLimitBytes: number;
}

export interface AttemptRunnerOptions extends AttemptEnvironment {
  retries: AttemptRetries;
  /** Puts an execution that found no room under its caps back at the front of the queue. */
  requeue: (operation: Operation) => void;
  /** Whether the server is stopping: what runs then is left for the next start. */
  stopping: () => boolean;
}

export class AttemptRunner {
  constructor(private readonly options: AttemptRunnerOptions) {}

  /** Runs the next attempt of `name`, unless it is no longer queued or retrying; `controller` stops it. */
  async execute(name: string, controller: AbortController, slots: readonly SlotKey[] | undefined): Promise<void> {
    const stored = await this.options.store.getOperation(name);
    if (stored === undefined || (stored.state !== TaskState.QUEUED && stored.state !== TaskState.RETRYING)) return;
    const seat = await this.reserveSeat(stored, controller.signal);
    if (seat === null) return; // cancelled while it waited
    const running = await this.claim(stored, slots, seat);
    if (running === undefined) {
      seat?.release();
      return; // cancelled or claimed meanwhile, or no room yet
    }
    const attempt = running.attempt;
    const workspace = workspaceOf(this.options.dataDir, name);
    // Off the event loop: on a loaded disk a synchronous mkdir held it about half a millisecond per attempt.
    await mkdir(workspace, { recursive: true });
    const credential =
      running.type === OperationType.EXECUTION_START
        ? await this.options.credentials.issue(running).catch((error: unknown) => {
            this.options.log.error({ err: error, operation: name }, "could not issue the execution credential");
            return undefined;
          })
        : undefined;
    if (running.type === OperationType.EXECUTION_START && credential === undefined) {
      seat?.release();
      await this.options.retries.attemptFailed(
        running,
        cause(
          StopReason.CREDENTIAL_UNAVAILABLE,
          `no execution credential could be issued under ${running.delegation} (revoked, expired, or see the server log)`,
        ),
        false,
      );
      return;
    }
    try {
      await this.runAttempt(running, attempt, workspace, controller, credential, seat);
    } finally {
      if (credential !== undefined) this.options.revoked(await this.options.credentials.retire(credential));
    }
  }

  /**
   * Claims a queued or retrying task for this runner: the transition to running, which for an
   * execution also needs room under its agentConcurrency caps counted over every replica. An
   * execution that finds none goes back to the front of the queue, and tries again shortly.
   */
  private async claim(stored: Operation, slots: readonly SlotKey[] | undefined, seat: Seat | undefined): Promise<Operation | undefined> {
    const attempt = stored.attempt + 1;
    const change = transitionChange(stored, TaskState.RUNNING, { case: "start", value: { policyDecisions: stored.policyDecisions } }, (op) => {
      op.attempt = attempt;
      op.runner = this.options.runnerId;
      op.worker = seat?.worker ?? "";
      op.startTime ??= timestampFromDate(new Date());
    });
    if (slots === undefined) {
      const result = await this.options.store.modifyOperation(stored.name, change);
      return result.kind === "modified" ? result.operation : undefined;
    }
    const result = await this.options.store.claimOperation(stored.name, slots, change);
    if (result.kind === "no-slot") {
      const retry = setTimeout(() => this.options.requeue(stored), CLAIM_RETRY_MS);
      retry.unref();
    }
    return result.kind === "modified" ? result.operation : undefined;
  }

  /**
   * Waits for room on an executor that reserves (remote workers); the task stays queued or
   * retrying meanwhile. Null when the wait was cancelled: a cancel ends the task here, a stop
   * of the server leaves it for the next start.
   */
  private async reserveSeat(stored: Operation, signal: AbortSignal): Promise<Seat | undefined | null> {
    const executor = this.options.executors.get(stored.type);
    if (executor?.reserve === undefined) return undefined;
    try {
      return await executor.reserve(stored, signal);
    } catch (error) {
      if (!signal.aborted) throw error;
      if (this.options.stopping()) return null;
      const why = (signal.reason as StopCause | undefined) ?? cause(StopReason.CANCELLED, "cancelled");
      await transition(this.options.store, stored, TaskState.CANCELLED, { case: "cancel", value: { cause: why } }, (op) => {
        op.stopCause = why;
      });
      return null;
    }
  }

  private async runAttempt(
    running: Operation,
    attempt: number,
    workspace: string,
    controller: AbortController,
    credential: ExecutionCredential | undefined,
    seat: Seat | undefined,
  ): Promise<void> {
    const { name } = running;
    const executor = this.options.executors.get(running.type);
    if (executor === undefined) throw new Error(`no executor for operation type ${running.type}`);
    // Writes during the attempt (progress events, the process record) go out one after
    // another, in the order they were reported. A report can come in after the attempt ended
    // (and, when the server stops, after the store closed): nobody awaits such a write, so its
    // failure is logged here rather than left unhandled.
    let writes = Promise.resolve();
    let pendingProgress: OperationEvent | undefined;
    const write = (change: (op: Operation) => void, event?: OperationEvent): void => {
      writes = writes
        .then(async () => {
          await this.options.store.modifyOperation(name, (next) => {
            if (next.state !== TaskState.RUNNING) return undefined;
            change(next);
            return { operation: next, ...(event ? { event } : {}) };
          });
        })
        .catch((error: unknown) => this.options.log.warn({ err: error, operation: name }, "could not record a report of the running task"));
    };
    const output = isExecution(running.type) ? await this.openOutput(name, attempt) : undefined;
    const outcome = await inTaskSpan("executor.run", attemptAttributes(running, attempt), (span) =>
      executor
        .run({
          operation: running,
          attempt,
          workspace,
          signal: controller.signal,
          ...(seat !== undefined ? { seat } : {}),
          ...(output !== undefined ? { output } : {}),
          env:
            credential === undefined
              ? {}
              : { ...planeEnvironment(this.options.serverAddress(), credential.token), AMCTL_TOKEN: credential.token, AMCTL_OPERATION: name },
          progress: (message, percent) => {
            const value = { message, ...(percent !== undefined ? { percent } : {}) };
            // A chatty process must not flood the event log: while a progress event waits for
            // its write, newer reports replace it, so at most one is pending per task.
            if (pendingProgress !== undefined) {
              pendingProgress.attributes = { case: "progress", value: create(ProgressAttributesSchema, value) };
              return;
            }
            const event = create(OperationEventSchema, {
              operation: name,
              type: EventType.PROGRESS,
              state: TaskState.RUNNING,
              attempt,
              attributes: { case: "progress", value },
            });
            pendingProgress = event;
            write(() => {
              pendingProgress = undefined;
              event.time = timestampFromDate(new Date());
            }, event);
          },
          // Usage as it accrues, so a watcher (and the budget) sees it before the attempt ends.
          usage: (measured) =>
            write((op) => {
              op.usage = withAttemptUsage(op.usage, running.usage, measured);
            }),
          spawned: (pid) => {
            const startTicks = processStartTicks(pid) ?? 0n; // now, while it surely is our process
            write((op) => {
              op.artifact = create(ArtifactSchema, { kind: { case: "localAgentExecution", value: { processId: pid, processStartTicks: startTicks } } });
            });
          },
        })
        .catch((error: unknown): Outcome => {
          this.options.log.error({ err: error, operation: name }, "executor failed");
          return { kind: "failed", cause: cause(StopReason.EXECUTOR_ERROR, "the executor failed; see the server log"), retryable: false };
        })
        .then((outcome) => recordOutcome(span, outcome)),
    );
    await writes;
    if (output !== undefined)
      await closeOutput(this.options.store, name, attempt).catch((error: unknown) =>
        this.options.log.warn({ err: error, operation: name }, "could not end the attempt's output"),
      );
    if (this.options.stopping()) return; // recovered as server_restart on the next start
    await this.applyOutcome(running, outcome, controller.signal);
  }

  /** Where the attempt's output is kept (attempt-output.ts); undefined, and the attempt runs on, when the store would not take it. */
  private async openOutput(name: string, attempt: number): Promise<OutputSink | undefined> {
    const sink = storeOutputSink(this.options.store, name, attempt, this.options.outputLimitBytes, this.options.log);
    return openOutput(sink).then(
      () => sink,
      () => undefined,
    );
  }

  /** `operation` as it was when the attempt started (its usage is the attempts' before this one); `signal` says why it was stopped, if it was. */
  private async applyOutcome(operation: Operation, outcome: Outcome, signal: AbortSignal): Promise<void> {
    const keep = (op: Operation): void => {
      if (outcome.artifact !== undefined) op.artifact = outcome.artifact;
      if (outcome.usage !== undefined) op.usage = withAttemptUsage(op.usage, operation.usage, outcome.usage);
    };
    switch (outcome.kind) {
      case "completed":
        await transition(this.options.store, operation, TaskState.COMPLETED, { case: "complete", value: { message: outcome.message } }, keep);
        return;
      case "cancelled": {
        const reason = signal.reason as StopCause | undefined;
        if (reason?.reason === StopReason.BUDGET_EXHAUSTED) {
          await this.options.retries.attemptFailed(operation, reason, false, keep);
          return;
        }
        const why = reason ?? cause(StopReason.CANCELLED, "cancelled");
        await transition(this.options.store, operation, TaskState.CANCELLED, { case: "cancel", value: { cause: why } }, (op) => {
          keep(op);
          op.stopCause = why;
        });
        return;
      }
      case "failed":
        await this.options.retries.attemptFailed(operation, outcome.cause, outcome.retryable, keep);
    }
  }
}
