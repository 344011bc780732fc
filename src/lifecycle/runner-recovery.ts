// Recovery and heartbeats: a runner says it is alive every heartbeat, and takes over the tasks
// of runners that stopped saying so (or, on the embedded store, of the process before it).
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { StopReason, type Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { type OperationType, TaskState } from "../gen/agentmachine/v1/types_pb.js";
import type { Executor } from "../executors/executor.js";
import type { Logger } from "../api/logger.js";
import type { StoreOperations, StoreRunners } from "../store/store.js";
import type { AttemptRetries } from "./attempt-retries.js";
import { cause } from "./task-transitions.js";

export interface RunnerRecoveryOptions {
  store: StoreRunners & StoreOperations;
  executors: ReadonlyMap<OperationType, Executor>;
  log: Logger;
  runnerId: string;
  heartbeatMs: number;
  runnerTimeoutMs: number;
  retries: AttemptRetries;
  /** Whether this runner has the task in hand already (running it, or waiting to). */
  knows: (name: string) => boolean;
  /** Schedules a queued task again. */
  enqueue: (operation: Operation) => void;
}

export class RunnerRecovery {
  private stopping = false;
  private heartbeats: NodeJS.Timeout | undefined;

  constructor(private readonly options: RunnerRecoveryOptions) {}

  /**
   * Picks up where previous processes left off, then keeps doing so. On the embedded store
   * (one process per data dir) every task left running is this process's predecessor's
   * orphan: it is stopped, and retried or failed with cause `server_restart`. On a shared
   * store, only tasks whose runner stopped sending heartbeats are taken over (cause
   * `runner_lost`); every heartbeat this runner also looks for such tasks, and for queued ones
   * nobody has claimed for a while. Queued and retrying tasks are scheduled again; whichever
   * runner claims one first runs it (the claim is a compare-and-set in the store).
   */
  async recover(): Promise<void> {
    await this.options.store.heartbeat(this.options.runnerId, new Date());
    await this.adoptAbandoned(true);
    this.heartbeats = setInterval(() => {
      this.beat().catch((error: unknown) => this.options.log.warn({ err: error }, "runner heartbeat failed"));
    }, this.options.heartbeatMs);
    this.heartbeats.unref();
  }

  /** Stops the heartbeats and adopts nothing more. */
  stop(): void {
    this.stopping = true;
    clearInterval(this.heartbeats);
  }

  private async beat(): Promise<void> {
    await this.options.store.heartbeat(this.options.runnerId, new Date());
    if (!this.options.store.exclusive) await this.adoptAbandoned(false);
  }

  /** Runners that said they were alive within the timeout, this one included. */
  private async aliveRunners(): Promise<Set<string>> {
    const since = Date.now() - this.options.runnerTimeoutMs;
    const alive = new Set([this.options.runnerId]);
    for (const [runner, at] of await this.options.store.runnerHeartbeats()) if (at.getTime() >= since) alive.add(runner);
    return alive;
  }

  private async adoptAbandoned(starting: boolean): Promise<void> {
    const { store, retries } = this.options;
    const alive = await this.aliveRunners();
    const unclaimedSince = Date.now() - this.options.runnerTimeoutMs;
    for (const operation of await store.listActiveOperations()) {
      if (this.stopping || this.options.knows(operation.name)) continue;
      const ownerGone = store.exclusive ? starting : !alive.has(operation.runner);
      if (operation.state === TaskState.RUNNING && ownerGone) {
        if (store.exclusive) {
          await this.stopOrphan(operation);
          await retries.attemptFailed(operation, cause(StopReason.SERVER_RESTART, "the server stopped while the task was running"), true);
        } else {
          await retries.attemptFailed(
            operation,
            cause(StopReason.RUNNER_LOST, `${operation.runner} stopped sending heartbeats while the task was running`),
            true,
          );
        }
      } else if (operation.state === TaskState.RETRYING && ownerGone) {
        retries.scheduleRetry(operation.name, retries.retryPolicy(operation).initialBackoffMs);
      } else if (operation.state === TaskState.QUEUED && (starting || timestampDate(operation.createTime!).getTime() < unclaimedSince)) {
        this.options.enqueue(operation);
      }
    }
  }

  /**
   * What a crashed server started must not go on running ungoverned: its executor stops it.
   * Only on the embedded store: there what was started surely is of this machine.
   */
  private async stopOrphan(operation: Operation): Promise<void> {
    const stopped = await this.options.executors
      .get(operation.type)
      ?.stopOrphan?.(operation)
      .catch((error: unknown) => {
        this.options.log.error({ err: error, operation: operation.name }, "could not stop what a previous server left running");
        return undefined;
      });
    if (stopped !== undefined) this.options.log.warn({ operation: operation.name, stopped }, "stopped what a previous server left running");
  }
}
