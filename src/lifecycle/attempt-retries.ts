// What follows a failed attempt: running → retrying (with a backoff) while attempts remain and
// a retry can help, else running → failed; and the timers that queue a retrying execution
// again once its backoff has passed.
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { Operation, StopCause } from "../gen/agentmachine/v1/operation_pb.js";
import { TaskState } from "../gen/agentmachine/v1/types_pb.js";
import type { Logger } from "../api/logger.js";
import type { StoreOperations } from "../store/store.js";
import { backoffMs, effectiveRetryPolicy, type EffectiveRetryPolicy } from "./retry.js";
import { transition } from "./task-transitions.js";

export interface AttemptRetriesOptions {
  store: StoreOperations;
  defaultRetry: EffectiveRetryPolicy;
  /** Queues a retrying execution whose backoff has passed. */
  requeue: (operation: Operation) => void;
  log: Logger;
}

export class AttemptRetries {
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();
  private stopping = false;

  constructor(private readonly options: AttemptRetriesOptions) {}

  retryPolicy(operation: Operation): EffectiveRetryPolicy {
    const spec = operation.spec?.kind;
    return effectiveRetryPolicy(spec?.case === "executionStart" ? spec.value.retryPolicy : undefined, this.options.defaultRetry);
  }

  /** running → retrying (with a backoff) while attempts remain and a retry can help, else running → failed. */
  async attemptFailed(operation: Operation, why: StopCause, retryable: boolean, keep: (op: Operation) => void = () => {}): Promise<void> {
    const policy = this.retryPolicy(operation);
    if (retryable && operation.attempt < policy.maxAttempts) {
      const delay = backoffMs(policy, operation.attempt + 1);
      const retrying = await transition(
        this.options.store,
        operation,
        TaskState.RETRYING,
        { case: "retry", value: { delay: durationFromMs(delay), cause: why } },
        keep,
      );
      if (retrying !== undefined) this.scheduleRetry(operation.name, delay);
      return;
    }
    await transition(this.options.store, operation, TaskState.FAILED, { case: "failure", value: { cause: why } }, (op) => {
      keep(op);
      op.stopCause = why;
    });
  }

  scheduleRetry(name: string, delayMs: number): void {
    if (this.stopping) return;
    const timer = setTimeout(() => {
      this.retryTimers.delete(name);
      // Only executions retry.
      this.options.store
        .getOperation(name)
        .then((operation) => operation && this.options.requeue(operation))
        .catch((error: unknown) => this.options.log.error({ err: error, operation: name }, "could not schedule a retry"));
    }, delayMs);
    this.retryTimers.set(name, timer);
  }

  has(name: string): boolean {
    return this.retryTimers.has(name);
  }

  /** Drops the pending retry of `name` (it is being cancelled). */
  forget(name: string): void {
    clearTimeout(this.retryTimers.get(name));
    this.retryTimers.delete(name);
  }

  /** Schedules no more retries and drops the pending ones; their tasks stay retrying in the store. */
  stop(): void {
    this.stopping = true;
    for (const timer of this.retryTimers.values()) clearTimeout(timer);
    this.retryTimers.clear();
  }
}
