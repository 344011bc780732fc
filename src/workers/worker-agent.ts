// `amctl worker`: runs executions for a server started with `--workers`. It keeps a Connect
// stream open (reconnecting with backoff when it drops), runs each assignment with the local
// process executor under the task's budget, renews its leases by heartbeat, and reports
// progress, usage and the outcome under the lease. Each task gets its own environment: the
// server's variables for that attempt (its own execution credential), never the worker's
// credential nor another task's.
//
// Fencing on the worker's side: a task whose lease the server revokes (heartbeat answer, a
// cancellation, a LEASE_REJECTED report) is killed at once, and so is every task when no
// heartbeat got through for a whole lease TTL — by then the server has given them to others.
import { mkdirSync, rmSync } from "node:fs";
import { planeEnvironment } from "../api/plane-environment.js";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { StopCauseSchema, StopReason, type StopCause } from "../gen/agentmachine/v1/operation_pb.js";
import { AttemptResult, type WorkerService, type Lease, type TaskAssignment } from "../gen/agentmachine/v1/worker_service_pb.js";
import type { Outcome } from "../executors/executor.js";
import { LocalProcessExecutor, type LocalProcessOptions } from "../executors/local-process.js";
import type { Logger } from "../api/logger.js";
import { operationIdOf } from "../model/resource-names.js";
import { outputStreamEnum } from "../executors/output-streams.js";

export interface WorkerAgentOptions {
  client: Client<typeof WorkerService>;
  /** The server's URL as this worker reaches it: tasks get it as AMCTL_SERVER. */
  server: string;
  capacity: number;
  labels: Record<string, string>;
  displayName: string;
  /** Task workspaces live in `<workDir>/<operation id>`. */
  workDir: string;
  execution: LocalProcessOptions;
  log: Logger;
}

interface RunningTask {
  lease: Lease;
  controller: AbortController;
  /** Stopped because the server no longer honours the lease: nobody to report to. */
  leaseLost: boolean;
  /** Settles when the task has ended and its outcome was reported (or dropped). */
  done: Promise<void>;
}

const RECONNECT_MIN_MS = 250;
const RECONNECT_MAX_MS = 5000;

const stopCause = (reason: StopReason, message: string): StopCause => create(StopCauseSchema, { reason, message });

function isLeaseRejected(error: unknown): boolean {
  return error instanceof ConnectError && error.findDetails(ErrorInfoSchema).some((info) => info.reason === "LEASE_REJECTED");
}

/** A refusal that another try would get again (a rejected lease among them). */
function isRefusal(error: unknown): boolean {
  return (
    error instanceof ConnectError && [Code.FailedPrecondition, Code.OutOfRange, Code.InvalidArgument, Code.NotFound, Code.PermissionDenied].includes(error.code)
  );
}

/**
 * How the attempt ended, as reported. A task stopped because the worker is stopping failed
 * (retryable): the server should retry it elsewhere now, not take it for cancelled.
 */
function resultOf(outcome: Outcome, why: StopCause | undefined) {
  switch (outcome.kind) {
    case "completed":
      return { result: AttemptResult.COMPLETED, message: outcome.message };
    case "failed":
      return { result: AttemptResult.FAILED, cause: outcome.cause, retryable: outcome.retryable };
    case "cancelled":
      return why?.reason === StopReason.WORKER_STOPPING ? { result: AttemptResult.FAILED, cause: why, retryable: true } : { result: AttemptResult.CANCELLED };
  }
}

export class WorkerAgent {
  private readonly tasks = new Map<string, RunningTask>();
  private readonly executor: LocalProcessExecutor;
  private worker = "";
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private lastRenewal = Date.now();
  private leaseTtlMs = 10_000;

  constructor(private readonly options: WorkerAgentOptions) {
    this.executor = new LocalProcessExecutor({ ...options.execution, killWithParent: true });
  }

  /** Serves until `signal` aborts; then stops its tasks (the server retries them elsewhere). */
  async run(signal: AbortSignal): Promise<void> {
    let backoff = RECONNECT_MIN_MS;
    while (!signal.aborted) {
      try {
        await this.serveConnection(signal);
        backoff = RECONNECT_MIN_MS;
      } catch (error) {
        if (signal.aborted) break;
        if (
          error instanceof ConnectError &&
          (error.code === Code.PermissionDenied || error.code === Code.Unauthenticated || error.code === Code.FailedPrecondition)
        )
          throw error;
        this.options.log.warn({ err: error, retryInMs: backoff }, "connection to the server lost; reconnecting");
      }
      await new Promise((resolve) => setTimeout(resolve, backoff));
      backoff = Math.min(backoff * 2, RECONNECT_MAX_MS);
    }
    const stopping = [...this.tasks.values()];
    for (const task of stopping) task.controller.abort(stopCause(StopReason.WORKER_STOPPING, "the worker is stopping"));
    // Reported as failed (retryable) so the server retries them now rather than after the lease TTL.
    await Promise.all(stopping.map((task) => task.done));
    clearInterval(this.heartbeatTimer);
  }

  private async serveConnection(signal: AbortSignal): Promise<void> {
    const { capacity, labels, displayName } = this.options;
    // After a reconnect, the same worker: its running tasks keep their leases and slots.
    for await (const { instruction } of this.options.client.connect({ capacity, labels, displayName, resumeWorker: this.worker }, { signal })) {
      switch (instruction.case) {
        case "welcome":
          this.worker = instruction.value.worker;
          this.leaseTtlMs = durationMs(instruction.value.leaseTtl!);
          this.startHeartbeats(durationMs(instruction.value.heartbeatInterval!));
          this.options.log.info({ worker: this.worker, capacity, labels }, "connected");
          break;
        case "assignment":
          this.start(instruction.value);
          break;
        case "cancellation":
          this.stopTask(instruction.value.lease!, instruction.value.cause ?? stopCause(StopReason.CANCELLED, "cancelled"));
          break;
      }
    }
  }

  private startHeartbeats(intervalMs: number): void {
    clearInterval(this.heartbeatTimer);
    this.lastRenewal = Date.now();
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), intervalMs);
  }

  private async heartbeat(): Promise<void> {
    try {
      // Only what names each lease: its expiry is the server's to set.
      const leases = [...this.tasks.values()].map(({ lease: { operation, attempt, fencingToken } }) => ({ operation, attempt, fencingToken }));
      const { revoked } = await this.options.client.heartbeat({ worker: this.worker, leases }, { timeoutMs: this.leaseTtlMs });
      this.lastRenewal = Date.now();
      for (const lease of revoked) this.loseLease(lease, "the server no longer honours the task's lease");
    } catch (error) {
      this.options.log.warn({ err: error }, "heartbeat failed");
      if (Date.now() - this.lastRenewal >= this.leaseTtlMs) {
        for (const task of this.tasks.values()) this.loseLease(task.lease, "no heartbeat reached the server within the lease");
      }
    }
  }

  /** The running task `lease` is for, if it is still that lease's (not an older or newer attempt's). */
  private taskUnder(lease: Pick<Lease, "operation" | "fencingToken">): RunningTask | undefined {
    const task = this.tasks.get(lease.operation);
    return task?.lease.fencingToken === lease.fencingToken ? task : undefined;
  }

  private stopTask(lease: Lease, why: StopCause): void {
    this.taskUnder(lease)?.controller.abort(why);
  }

  private loseLease(lease: Pick<Lease, "operation" | "fencingToken">, message: string): void {
    const task = this.taskUnder(lease);
    if (task === undefined) return;
    task.leaseLost = true;
    task.controller.abort(stopCause(StopReason.LEASE_LOST, message));
  }

  private start(assignment: TaskAssignment): void {
    const lease = assignment.lease!;
    const operation = assignment.operation!;
    const controller = new AbortController();
    const task: RunningTask = { lease, controller, leaseLost: false, done: Promise.resolve() };
    this.tasks.set(operation.name, task);
    this.options.log.info({ operation: operation.name, attempt: lease.attempt, fencingToken: String(lease.fencingToken) }, "assigned");
    const workspace = join(this.options.workDir, operationIdOf(operation.name));
    mkdirSync(workspace, { recursive: true, mode: 0o700 });
    const report = { worker: this.worker, lease };
    task.done = this.executor
      .run({
        operation,
        attempt: lease.attempt,
        workspace,
        signal: controller.signal,
        env: { ...assignment.env, ...planeEnvironment(this.options.server, assignment.env.AMCTL_TOKEN) },
        spawned: () => {},
        progress: (message, percent) =>
          this.send(() => this.options.client.reportProgress({ ...report, message, ...(percent !== undefined ? { percent } : {}) }), task),
        usage: (usage) => this.send(() => this.options.client.reportProgress({ ...report, usage }), task),
        // Sent as it comes, and all of it before the outcome: the server keeps it after this workspace is gone.
        output: {
          append: async (stream, offset, data, end) => {
            const request = { ...report, stream: outputStreamEnum(stream), offset, data, end: end !== undefined, truncated: end?.truncated ?? false };
            if (!(await this.deliver(() => this.options.client.appendOutput(request), report.lease, `${stream} output`)))
              throw new Error("output not delivered");
          },
        },
      })
      // The workspace is gone before the outcome is reported: a client that sees the task end
      // may count on it.
      .finally(() => {
        try {
          rmSync(workspace, { recursive: true, force: true });
        } catch (error) {
          this.options.log.warn({ err: error, operation: operation.name }, "could not remove the task's workspace");
        }
      })
      .then((outcome) => (task.leaseLost ? undefined : this.reportOutcome(report, outcome, controller.signal.reason as StopCause | undefined)))
      .catch((error: unknown) => this.options.log.error({ err: error, operation: operation.name }, "task failed unexpectedly"))
      .finally(() => {
        if (this.tasks.get(operation.name) === task) this.tasks.delete(operation.name);
      });
  }

  /** A report the task's run does not wait for; a rejected lease stops the task. */
  private send(call: () => Promise<unknown>, task: RunningTask): void {
    call().catch((error: unknown) => {
      if (isLeaseRejected(error)) this.loseLease(task.lease, "the server rejected the task's lease");
      else this.options.log.warn({ err: error }, "could not report progress");
    });
  }

  /**
   * Makes a report that matters (the outcome, output), tried again while the lease may still be
   * honoured; resolves with whether the server took it.
   */
  private async deliver(call: () => Promise<unknown>, lease: Lease, what: string): Promise<boolean> {
    for (let tries = 0; ; tries += 1) {
      try {
        await call();
        return true;
      } catch (error) {
        if (isRefusal(error) || tries >= 5) {
          this.options.log.warn({ err: error, operation: lease.operation }, `${what} was not accepted`);
          return false;
        }
        await new Promise((resolve) => setTimeout(resolve, RECONNECT_MIN_MS * 2 ** tries));
      }
    }
  }

  /** `why`: what stopped the task, if something did (a cancellation, the worker stopping). */
  private async reportOutcome(report: { worker: string; lease: Lease }, outcome: Outcome, why: StopCause | undefined): Promise<void> {
    const request = {
      ...report,
      ...(outcome.artifact !== undefined ? { artifact: outcome.artifact } : {}),
      ...(outcome.usage !== undefined ? { usage: outcome.usage } : {}),
      ...resultOf(outcome, why),
    };
    if (await this.deliver(() => this.options.client.reportOutcome(request), report.lease, "the outcome")) {
      this.options.log.info({ operation: report.lease.operation, result: AttemptResult[request.result] }, "reported");
    }
  }
}
