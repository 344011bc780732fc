// Drives each operation's task through the lifecycle: queued → running → completed / failed /
// retrying / cancelled. The runner composes the parts, each in its own module: the queue and
// its slots (execution-queue.ts), running an attempt (run-attempt.ts), retries after a failed
// attempt (attempt-retries.ts), cancelling (task-cancellation.ts), recovery and heartbeats
// (runner-recovery.ts); every change of state goes through task-transitions.ts.
import { context } from "@opentelemetry/api";
import { StopReason, type Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import type { BudgetDimension } from "../gen/agentmachine/v1/budget_pb.js";
import type { SlotKey, StoreAccounts, StoreDelegations, StoreEvents, StoreOperations, StoreOutput, StoreRunners } from "../store/store.js";
import { AttemptRetries } from "./attempt-retries.js";
import { CancelCommand } from "./cancel-command.js";
import { slotKeysOf } from "./concurrency.js";
import { ExecutionQueue } from "./execution-queue.js";
import { isExecution } from "../model/execution-types.js";
import type { EffectiveRetryPolicy } from "./retry.js";
import { AttemptRunner, type AttemptEnvironment } from "./run-attempt.js";
import { RunnerRecovery } from "./runner-recovery.js";
import { TaskCancellation } from "./task-cancellation.js";
import { cause } from "./task-transitions.js";
import { isTerminal } from "../model/transitions.js";
import { runAsTask } from "../telemetry/tracer.js";

export interface RunnerOptions extends AttemptEnvironment {
  store: StoreRunners & StoreOperations & StoreEvents & StoreOutput & StoreDelegations & StoreAccounts;
  /** Tasks running at once on this server; further ones wait in queued, in order. */
  maxConcurrent: number;
  defaultRetry: EffectiveRetryPolicy;
  /** How often this runner says it is alive (and, on a shared store, looks for tasks of runners that stopped). */
  heartbeatMs: number;
  /** A runner silent for this long is taken for dead: its running tasks are retried or failed with cause `runner_lost`. */
  runnerTimeoutMs: number;
}

export class OperationRunner {
  /** The operation types this runner runs: those of its executors, and execution.cancel, which it runs itself. */
  readonly executable: ReadonlySet<OperationType>;
  private readonly running = new Map<string, AbortController>();
  private readonly queue: ExecutionQueue;
  private readonly retries: AttemptRetries;
  private readonly cancellation: TaskCancellation;
  private readonly attempts: AttemptRunner;
  private readonly recovery: RunnerRecovery;
  private stopping = false;

  constructor(private readonly options: RunnerOptions) {
    // A task this runner runs that ends elsewhere (cancelled through another replica, or taken
    // over) must stop here too: the store tells every replica of every commit.
    options.store.onCommit((events) => {
      for (const { event } of events) {
        if (isTerminal(event.state)) this.running.get(event.operation)?.abort(cause(StopReason.CANCELLED, "the task ended on another server"));
      }
    });
    const { store, log } = options;
    this.queue = new ExecutionQueue({
      maxConcurrent: options.maxConcurrent,
      slotKeysOf: (operation) => slotKeysOf(store, operation),
      start: (name, done, slots, origin) => this.launch(name, done, slots, origin),
      log,
    });
    this.retries = new AttemptRetries({ store, defaultRetry: options.defaultRetry, requeue: (operation) => this.queue.wait(operation), log });
    this.cancellation = new TaskCancellation({ store, running: this.running, retries: this.retries, queue: this.queue, log });
    const executors = new Map(options.executors).set(OperationType.EXECUTION_CANCEL, new CancelCommand(this.cancellation));
    this.executable = new Set(executors.keys());
    this.attempts = new AttemptRunner({
      ...options,
      executors,
      retries: this.retries,
      requeue: (operation) => this.queue.wait(operation, true),
      stopping: () => this.stopping,
    });
    this.recovery = new RunnerRecovery({
      ...options,
      retries: this.retries,
      knows: (name) => this.knows(name),
      enqueue: (operation) => this.enqueue(operation),
    });
  }

  /** Picks up where previous processes left off, then keeps doing so (see runner-recovery.ts). */
  recover(): Promise<void> {
    return this.recovery.recover();
  }

  private knows(name: string): boolean {
    return this.running.has(name) || this.retries.has(name) || this.queue.has(name);
  }

  /**
   * Schedules a queued task. Executions take one of `maxConcurrent` slots; records and commands
   * (profile, grants, bindings, cancels) run at once, so a cancel is never stuck behind the
   * executions it is meant to stop.
   */
  enqueue(operation: Pick<Operation, "name" | "type" | "delegation" | "profile">): void {
    if (this.stopping) return;
    if (isExecution(operation.type)) this.queue.wait(operation);
    else this.launch(operation.name);
  }

  /** Cancels every active operation under the delegations `names`, which were revoked. */
  cancelOperationsUnder(names: ReadonlySet<string>): Promise<void> {
    return this.cancellation.cancelOperationsUnder(names);
  }

  /** Executions this runner is running, and those waiting here for a slot (for the metrics). */
  executionCounts(): { running: number; queued: number } {
    return this.queue.counts();
  }

  /** Stops taking work and stops running executors; their tasks stay running in the store and are recovered on the next start. */
  stop(): void {
    this.stopping = true;
    this.recovery.stop();
    this.queue.stop();
    this.retries.stop();
    for (const controller of this.running.values()) controller.abort(cause(StopReason.SERVER_RESTART, "the server is stopping"));
  }

  /**
   * Ends a running task as failed because a budget dimension ran out: its executor is stopped
   * and the state turns failed with cause `budget_exhausted` naming the dimension.
   */
  stopForBudget(name: string, dimension: BudgetDimension, message: string): void {
    this.running.get(name)?.abort(cause(StopReason.BUDGET_EXHAUSTED, message, dimension));
  }

  /**
   * Runs a task; `slots`, for an execution: the caps its claim must find room under (on every
   * replica). It runs in the trace context `origin` (where it was queued), not in whichever
   * task's context freed the slot, as a task of its span (runAsTask): its `executor.run` is a
   * child of the submit's span, its claim and outcome commits make no spans.
   */
  private launch(name: string, done: () => void = () => {}, slots?: readonly SlotKey[], origin = context.active()): void {
    const controller = new AbortController();
    this.running.set(name, controller);
    context
      .with(origin, () => runAsTask(() => this.attempts.execute(name, controller, slots)))
      .catch((error: unknown) => this.options.log.error({ err: error, operation: name }, "task failed unexpectedly"))
      .finally(() => {
        this.running.delete(name);
        done();
      });
  }
}
