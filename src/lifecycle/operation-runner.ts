// Drives each operation's task through the lifecycle: queued → running → completed / failed /
// retrying / cancelled. Every change goes through transition(), which checks the one table of
// legal transitions (transitions.ts) and commits the new state with its event in one write.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { context, type Context } from "@opentelemetry/api";
import { durationFromMs, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ArtifactSchema } from "../gen/agentmachine/v1/artifact_pb.js";
import { OperationEventSchema, ProgressAttributesSchema, type OperationEvent } from "../gen/agentmachine/v1/event_pb.js";
import { StopCauseSchema, StopReason, type Operation, type StopCause } from "../gen/agentmachine/v1/operation_pb.js";
import { EventType, OperationType, TaskState } from "../gen/agentmachine/v1/types_pb.js";
import type { Executor, Outcome, Seat } from "../executors/executor.js";
import { processStartTicks } from "../executors/process-identity.js";
import type { Logger } from "../server/logger.js";
import type { Modification, OperationStore, SlotKey } from "../store/store.js";
import { settlementFor, spendsBudget, withAttemptUsage } from "../governance/budget-ledger.js";
import type { ExecutionCredential, ExecutionCredentials } from "../governance/execution-credentials.js";
import { BudgetDimension } from "../gen/agentmachine/v1/budget_pb.js";
import { ConcurrencySlots, slotKeysOf } from "./concurrency.js";
import { illegalTransition, operationNotFound } from "./errors.js";
import { backoffMs, effectiveRetryPolicy, type EffectiveRetryPolicy } from "./retry.js";
import { isTerminal, transitionEvent } from "./transitions.js";
import { attemptAttributes, recordOutcome } from "./attempt-span.js";
import { inSpan } from "../telemetry/tracer.js";

export interface RunnerOptions {
  store: OperationStore;
  executors: ReadonlyMap<OperationType, Executor>;
  /** Operation workspaces live in `<dataDir>/workspaces/<id>`. */
  dataDir: string;
  /** Tasks running at once on this server; further ones wait in queued, in order. */
  maxConcurrent: number;
  defaultRetry: EffectiveRetryPolicy;
  log: Logger;
  /** Issues each execution attempt its own credential (see src/governance/execution-credentials.ts). */
  credentials: ExecutionCredentials;
  /** The URL executions reach this server at (AMCTL_SERVER); known once it listens. */
  serverAddress: () => string;
  /** Told the names of delegations the runner revoked (retired execution credentials). */
  revoked: (names: ReadonlySet<string>) => void;
  /** This runner's id (one per server process), recorded on the tasks it claims. */
  runnerId: string;
  /** How often this runner says it is alive (and, on a shared store, looks for tasks of runners that stopped). */
  heartbeatMs: number;
  /** A runner silent for this long is taken for dead: its running tasks are retried or failed with cause `runner_lost`. */
  runnerTimeoutMs: number;
}

interface Waiting {
  name: string;
  /** The concurrency caps it runs under; undefined while they are being looked up. */
  keys?: SlotKey[];
  /** The trace context it was queued in (its submit's call), which its attempt's spans continue. */
  origin: Context;
}

type Attributes = MessageInitShape<typeof OperationEventSchema>["attributes"];

function usesSlot(type: OperationType): boolean {
  return type === OperationType.EXECUTION_START || type === OperationType.CONTAINER_RUN;
}

function cause(reason: StopReason, message: string, dimension = BudgetDimension.UNSPECIFIED): StopCause {
  return create(StopCauseSchema, { reason, message, dimension });
}

/** How soon an execution that found its caps full on other replicas tries its claim again. */
const CLAIM_RETRY_MS = 250;

export class OperationRunner {
  /** Executions waiting for a slot, in arrival order. Other operations never wait for one. */
  private readonly queue: Waiting[] = [];
  private readonly slots = new ConcurrencySlots();
  private readonly running = new Map<string, AbortController>();
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();
  private stopping = false;
  private slotsInUse = 0;
  private heartbeats: NodeJS.Timeout | undefined;

  constructor(private readonly options: RunnerOptions) {
    // A task this runner runs that ends elsewhere (cancelled through another replica, or taken
    // over) must stop here too: the store tells every replica of every commit.
    options.store.onCommit((events) => {
      for (const { event } of events) {
        if (isTerminal(event.state)) this.running.get(event.operation)?.abort(cause(StopReason.CANCELLED, "the task ended on another server"));
      }
    });
  }

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

  private knows(name: string): boolean {
    return this.running.has(name) || this.retryTimers.has(name) || this.queue.some((entry) => entry.name === name);
  }

  private async adoptAbandoned(starting: boolean): Promise<void> {
    const { store } = this.options;
    const alive = await this.aliveRunners();
    const unclaimedSince = Date.now() - this.options.runnerTimeoutMs;
    for (const operation of await store.listActiveOperations()) {
      if (this.stopping || this.knows(operation.name)) continue;
      const ownerGone = store.exclusive ? starting : !alive.has(operation.runner);
      if (operation.state === TaskState.RUNNING && ownerGone) {
        if (store.exclusive) {
          await this.stopOrphan(operation);
          await this.attemptFailed(operation, cause(StopReason.SERVER_RESTART, "the server stopped while the task was running"), true);
        } else {
          await this.attemptFailed(operation, cause(StopReason.RUNNER_LOST, `${operation.runner} stopped sending heartbeats while the task was running`), true);
        }
      } else if (operation.state === TaskState.RETRYING && ownerGone) {
        this.scheduleRetry(operation.name, this.retryPolicy(operation).initialBackoffMs);
      } else if (operation.state === TaskState.QUEUED && (starting || timestampDate(operation.createTime!).getTime() < unclaimedSince)) {
        this.enqueue(operation);
      }
    }
  }

  /**
   * What a crashed server started must not go on running ungoverned: its executor stops it.
   * Only on the embedded store: there what was started surely is of this machine.
   */
  private async stopOrphan(operation: Operation): Promise<void> {
    const stopped = await this.options.executors.get(operation.type)?.stopOrphan?.(operation).catch((error: unknown) => {
      this.options.log.error({ err: error, operation: operation.name }, "could not stop what a previous server left running");
      return undefined;
    });
    if (stopped !== undefined) this.options.log.warn({ operation: operation.name, stopped }, "stopped what a previous server left running");
  }

  /**
   * Schedules a queued task. Executions take one of `maxConcurrent` slots; records and commands
   * (profile, grants, bindings, cancels) run at once, so a cancel is never stuck behind the
   * executions it is meant to stop.
   */
  enqueue(operation: Pick<Operation, "name" | "type" | "delegation" | "profile">): void {
    if (this.stopping) return;
    if (usesSlot(operation.type)) this.wait(operation);
    else this.launch(operation.name);
  }

  /** Queues an execution (at the front: one that waited before); it starts once its caps are known and it fits (see pump). */
  private wait(operation: Pick<Operation, "name" | "delegation" | "profile">, front = false): void {
    if (this.stopping) return;
    const entry: Waiting = { name: operation.name, origin: context.active() };
    if (front) this.queue.unshift(entry);
    else this.queue.push(entry);
    slotKeysOf(this.options.store, operation)
      .then((keys) => {
        entry.keys = keys;
      })
      .catch((error: unknown) => {
        this.options.log.error({ err: error, operation: operation.name }, "could not look up concurrency caps; the task runs under the server's limit only");
        entry.keys = [];
      })
      .finally(() => this.pump());
  }

  /**
   * Cancels a task: a waiting one at once, a running one by stopping its executor (the state
   * turns cancelled when it has stopped). Cancelling a task that is already stopping is a no-op.
   */
  async cancel(name: string, reason: string, causeReason = StopReason.CANCELLED): Promise<void> {
    const operation = await this.options.store.getOperation(name);
    if (operation === undefined) throw operationNotFound(name);
    if (isTerminal(operation.state)) throw illegalTransition(name, operation.state, "cancel");
    const controller = this.running.get(name);
    if (controller !== undefined) {
      controller.abort(cause(causeReason, reason));
      return;
    }
    clearTimeout(this.retryTimers.get(name));
    this.retryTimers.delete(name);
    const queued = this.queue.findIndex((entry) => entry.name === name);
    if (queued >= 0) this.queue.splice(queued, 1);
    const why = cause(causeReason, reason);
    await this.transition(operation, TaskState.CANCELLED, { case: "cancel", value: { cause: why } }, (op) => {
      op.stopCause = why;
    });
  }

  /** Executions this runner is running, and those waiting here for a slot (for the metrics). */
  executionCounts(): { running: number; queued: number } {
    return { running: this.slotsInUse, queued: this.queue.length };
  }

  /** Stops taking work and stops running executors; their tasks stay running in the store and are recovered on the next start. */
  stop(): void {
    this.stopping = true;
    clearInterval(this.heartbeats);
    for (const timer of this.retryTimers.values()) clearTimeout(timer);
    this.retryTimers.clear();
    for (const controller of this.running.values()) controller.abort(cause(StopReason.SERVER_RESTART, "the server is stopping"));
  }

  private retryPolicy(operation: Operation): EffectiveRetryPolicy {
    const spec = operation.spec?.spec;
    return effectiveRetryPolicy(spec?.case === "executionStart" ? spec.value.retryPolicy : undefined, this.options.defaultRetry);
  }

  /**
   * Ends a running task as failed because a budget dimension ran out: its executor is stopped
   * and the state turns failed with cause `budget_exhausted` naming the dimension.
   */
  stopForBudget(name: string, dimension: BudgetDimension, message: string): void {
    this.running.get(name)?.abort(cause(StopReason.BUDGET_EXHAUSTED, message, dimension));
  }

  /**
   * Starts waiting executions in arrival order while the server has slots: one whose caps are
   * full is passed over (and with it, in effect, every later one under the same caps, so each
   * cap is served first come, first served); one whose caps are still being looked up holds
   * back everything after it.
   */
  private pump(): void {
    for (let i = 0; i < this.queue.length && !this.stopping && this.slotsInUse < this.options.maxConcurrent; ) {
      const entry = this.queue[i]!;
      if (entry.keys === undefined) return;
      if (!this.slots.fits(entry.keys)) {
        i += 1;
        continue;
      }
      this.queue.splice(i, 1);
      const keys = entry.keys;
      this.slotsInUse += 1;
      this.slots.take(keys);
      this.launch(
        entry.name,
        () => {
          this.slotsInUse -= 1;
          this.slots.release(keys);
          this.pump();
        },
        keys,
        entry.origin,
      );
    }
  }

  /**
   * Runs a task; `slots`, for an execution: the caps its claim must find room under (on every
   * replica). It runs in the trace context `origin` (where it was queued), not in whichever
   * task's context freed the slot.
   */
  private launch(name: string, done: () => void = () => {}, slots?: readonly SlotKey[], origin = context.active()): void {
    const controller = new AbortController();
    this.running.set(name, controller);
    context
      .with(origin, () => this.execute(name, controller, slots))
      .catch((error: unknown) => this.options.log.error({ err: error, operation: name }, "task failed unexpectedly"))
      .finally(() => {
        this.running.delete(name);
        done();
      });
  }

  /**
   * Moves `operation` from its state to `to` with its event, if that transition is legal and
   * nobody moved it meanwhile (same state, same attempt, same runner: a runner taken for dead
   * cannot end the attempt another runner has started since). A read-modify-write in one
   * commit, so usage charged at runtime (RuntimeService) is never overwritten; an execution
   * that ends settles its budget there too.
   */
  private async transition(operation: Operation, to: TaskState, attributes: Attributes, change: (op: Operation) => void = () => {}): Promise<Operation | undefined> {
    const result = await this.options.store.modifyOperation(operation.name, this.transitionChange(operation, to, attributes, change));
    return result.kind === "modified" ? result.operation : undefined;
  }

  private transitionChange(operation: Operation, to: TaskState, attributes: Attributes, change: (op: Operation) => void): Modification {
    const from = operation.state;
    const type = transitionEvent(from, to);
    if (type === undefined) throw illegalTransition(operation.name, from, `move to ${TaskState[to].toLowerCase()}`);
    return (next) => {
      if (next.state !== from || next.attempt !== operation.attempt || next.runner !== operation.runner) return undefined;
      next.state = to;
      change(next);
      const ends = isTerminal(to);
      if (ends) next.endTime = timestampFromDate(new Date());
      const event = create(OperationEventSchema, {
        operation: operation.name,
        type,
        state: to,
        time: timestampFromDate(new Date()),
        attempt: next.attempt,
        attributes,
      });
      return { operation: next, event, ...(ends && spendsBudget(next.type) ? { settle: settlementFor(next) } : {}) };
    };
  }

  /**
   * Claims a queued or retrying task for this runner: the transition to running, which for an
   * execution also needs room under its agentConcurrency caps counted over every replica. An
   * execution that finds none goes back to the front of the queue, and tries again shortly.
   */
  private async claim(stored: Operation, slots: readonly SlotKey[] | undefined, seat: Seat | undefined): Promise<Operation | undefined> {
    const attempt = stored.attempt + 1;
    const change = this.transitionChange(stored, TaskState.RUNNING, { case: "start", value: { policyDecisions: stored.policyDecisions } }, (op) => {
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
      const retry = setTimeout(() => this.wait(stored, true), CLAIM_RETRY_MS);
      retry.unref();
    }
    return result.kind === "modified" ? result.operation : undefined;
  }

  private async execute(name: string, controller: AbortController, slots: readonly SlotKey[] | undefined): Promise<void> {
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
    const workspace = join(this.options.dataDir, "workspaces", name.replace("operations/", ""));
    mkdirSync(workspace, { recursive: true });
    const credential =
      running.type === OperationType.EXECUTION_START
        ? await this.options.credentials.issue(running).catch((error: unknown) => {
            this.options.log.error({ err: error, operation: name }, "could not issue the execution credential");
            return undefined;
          })
        : undefined;
    if (running.type === OperationType.EXECUTION_START && credential === undefined) {
      seat?.release();
      await this.attemptFailed(running, cause(StopReason.CREDENTIAL_UNAVAILABLE, `no execution credential could be issued under ${running.delegation} (revoked, expired, or see the server log)`), false);
      return;
    }
    try {
      await this.runAttempt(running, attempt, workspace, controller, credential, seat);
    } finally {
      if (credential !== undefined) this.options.revoked(await this.options.credentials.retire(credential));
    }
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
      if (this.stopping) return null;
      const why = (signal.reason as StopCause | undefined) ?? cause(StopReason.CANCELLED, "cancelled");
      await this.transition(stored, TaskState.CANCELLED, { case: "cancel", value: { cause: why } }, (op) => {
        op.stopCause = why;
      });
      return null;
    }
  }

  private async runAttempt(running: Operation, attempt: number, workspace: string, controller: AbortController, credential: ExecutionCredential | undefined, seat: Seat | undefined): Promise<void> {
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
    const outcome = await inSpan("executor.run", attemptAttributes(running, attempt), (span) =>
      executor
        .run({
          operation: running,
          attempt,
          workspace,
          signal: controller.signal,
          ...(seat !== undefined ? { seat } : {}),
          env: credential === undefined ? {} : { AMCTL_SERVER: this.options.serverAddress(), AMCTL_TOKEN: credential.token, AMCTL_OPERATION: name },
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
            write(
              () => {
                pendingProgress = undefined;
                event.time = timestampFromDate(new Date());
              },
              event,
            );
          },
          // Usage as it accrues, so a watcher (and the budget) sees it before the attempt ends.
          usage: (measured) => write((op) => {
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
    if (this.stopping) return; // recovered as server_restart on the next start
    await this.applyOutcome(running, outcome);
  }

  /** `operation` as it was when the attempt started (its usage is the attempts' before this one). */
  private async applyOutcome(operation: Operation, outcome: Outcome): Promise<void> {
    const keep = (op: Operation): void => {
      if (outcome.artifact !== undefined) op.artifact = outcome.artifact;
      if (outcome.usage !== undefined) op.usage = withAttemptUsage(op.usage, operation.usage, outcome.usage);
    };
    switch (outcome.kind) {
      case "completed":
        await this.transition(operation, TaskState.COMPLETED, { case: "complete", value: { message: outcome.message } }, keep);
        return;
      case "cancelled": {
        const reason = this.running.get(operation.name)?.signal.reason as StopCause | undefined;
        if (reason?.reason === StopReason.BUDGET_EXHAUSTED) {
          await this.attemptFailed(operation, reason, false, keep);
          return;
        }
        const why = reason ?? cause(StopReason.CANCELLED, "cancelled");
        await this.transition(operation, TaskState.CANCELLED, { case: "cancel", value: { cause: why } }, (op) => {
          keep(op);
          op.stopCause = why;
        });
        return;
      }
      case "failed":
        await this.attemptFailed(operation, outcome.cause, outcome.retryable, keep);
    }
  }

  /** running → retrying (with a backoff) while attempts remain and a retry can help, else running → failed. */
  private async attemptFailed(operation: Operation, why: StopCause, retryable: boolean, keep: (op: Operation) => void = () => {}): Promise<void> {
    const policy = this.retryPolicy(operation);
    if (retryable && operation.attempt < policy.maxAttempts) {
      const delay = backoffMs(policy, operation.attempt + 1);
      const retrying = await this.transition(operation, TaskState.RETRYING, { case: "retry", value: { delay: durationFromMs(delay), cause: why } }, keep);
      if (retrying !== undefined) this.scheduleRetry(operation.name, delay);
      return;
    }
    await this.transition(operation, TaskState.FAILED, { case: "failure", value: { cause: why } }, (op) => {
      keep(op);
      op.stopCause = why;
    });
  }

  private scheduleRetry(name: string, delayMs: number): void {
    if (this.stopping) return;
    const timer = setTimeout(() => {
      this.retryTimers.delete(name);
      // Only executions retry.
      this.options.store
        .getOperation(name)
        .then((operation) => operation && this.wait(operation))
        .catch((error: unknown) => this.options.log.error({ err: error, operation: name }, "could not schedule a retry"));
    }, delayMs);
    this.retryTimers.set(name, timer);
  }
}
