// Cancelling tasks: one (an execution.cancel), or every active one under delegations that were
// revoked. A waiting task is cancelled at once; a running one by stopping its executor.
import { StopReason, type Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { TaskState } from "../gen/agentmachine/v1/types_pb.js";
import type { Logger } from "../api/logger.js";
import type { StoreOperations } from "../store/store.js";
import type { AttemptRetries } from "./attempt-retries.js";
import { requireNotEnded } from "./cancel-target.js";
import { operationNotFound } from "./errors.js";
import type { ExecutionQueue } from "./execution-queue.js";
import { cause, transition } from "./task-transitions.js";

export interface TaskCancellationOptions {
  store: StoreOperations;
  /** The tasks this runner is running, each stopped by aborting its controller. */
  running: ReadonlyMap<string, AbortController>;
  retries: AttemptRetries;
  queue: ExecutionQueue;
  log: Logger;
}

export class TaskCancellation {
  constructor(private readonly options: TaskCancellationOptions) {}

  /**
   * Cancels a task: a waiting one at once, a running one by stopping its executor (the state
   * turns cancelled when it has stopped). Cancelling a task that is already stopping is a no-op.
   */
  async cancel(name: string, reason: string, causeReason = StopReason.CANCELLED): Promise<void> {
    const operation = await this.options.store.getOperation(name);
    if (operation === undefined) throw operationNotFound(name);
    requireNotEnded(operation);
    const controller = this.options.running.get(name);
    if (controller !== undefined) {
      controller.abort(cause(causeReason, reason));
      return;
    }
    this.options.retries.forget(name);
    this.options.queue.remove(name);
    const why = cause(causeReason, reason);
    await transition(this.options.store, operation, TaskState.CANCELLED, { case: "cancel", value: { cause: why } }, (op: Operation) => {
      op.stopCause = why;
    });
  }

  /** Cancels every active operation under one of the delegations `names`, which were revoked; a cancel that fails is logged. */
  async cancelOperationsUnder(names: ReadonlySet<string>): Promise<void> {
    for (const operation of await this.options.store.listActiveOperations()) {
      if (!names.has(operation.delegation)) continue;
      await this.cancel(operation.name, `${operation.delegation} was revoked`, StopReason.DELEGATION_REVOKED).catch((error: unknown) => {
        this.options.log.warn({ err: error, operation: operation.name }, "could not cancel an operation under a revoked delegation");
      });
    }
  }
}
