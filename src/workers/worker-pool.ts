// The server's side of remote workers: who is connected to this server, what each may run,
// and the lease of every attempt a worker runs. It is the Executor for executions on a server
// started with `--workers`:
//   reserve  waits until a connected worker may take the operation (its delegation's
//            worker_profiles cover the profile, its labels satisfy the worker_selector, it has a
//            free slot) — the task stays queued meanwhile, in arrival order;
//   run      hands the attempt to that worker under a lease and resolves with what it reports.
// A lease not renewed by a heartbeat within the TTL expires: the attempt fails with cause
// `worker_lost` (retryable, so the retry policy decides between another worker and failed).
// Every report carries the lease; one whose fencing token is not the operation's current lease
// is refused (LEASE_REJECTED), so a worker taken for dead can never end an attempt that has
// moved on. The worker itself stops its tasks when it cannot renew their leases in time.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";
import { StopCauseSchema, StopReason, type Operation, type StopCause } from "../gen/agentmachine/v1/operation_pb.js";
import {
  AttemptResult,
  ConnectResponseSchema,
  LeaseSchema,
  type ConnectResponse,
  type HeldLease,
  type Lease,
  type AppendOutputRequest,
  type ReportOutcomeRequest,
  type ReportProgressRequest,
} from "../gen/agentmachine/v1/worker_service_pb.js";
import { allows } from "../governance/attenuation.js";
import { outputStreamName } from "../executors/output-streams.js";
import { outputNotKept } from "../executors/output-errors.js";
import type { Principal } from "../governance/authority.js";
import type { Attempt, Executor, Outcome, Seat } from "../executors/executor.js";
import { leaseRejected } from "./errors.js";
import { InstructionQueue } from "./instruction-queue.js";
import { ulid } from "ulid";

const instruction = (init: MessageInitShape<typeof ConnectResponseSchema>["instruction"]): ConnectResponse =>
  create(ConnectResponseSchema, { instruction: init });

/** What names a lease: a heartbeat's HeldLease or a report's Lease. */
type LeaseIdentity = Pick<Lease, "operation" | "attempt" | "fencingToken">;

export interface WorkerPoolOptions {
  /** A lease not renewed for this long expires. */
  leaseTtlMs: number;
}

interface ConnectedWorker {
  name: string;
  /** The delegation the worker authenticated with: only it may report on the worker's leases. */
  delegation: string;
  profiles: readonly string[];
  labels: Readonly<Record<string, string>>;
  capacity: number;
  /** Attempts reserved for or running on the worker. */
  busy: number;
  connected: boolean;
  instructions: InstructionQueue<ConnectResponse>;
}

interface ActiveLease {
  lease: Lease;
  worker: ConnectedWorker;
  expiresAt: number;
  attempt: Attempt;
  settle: (outcome: Outcome) => void;
}

interface Waiter {
  operation: Operation;
  grant: (seat: Seat) => void;
}

const workerLost = (message: string): StopCause => create(StopCauseSchema, { reason: StopReason.WORKER_LOST, message });

/** The labels an execution asks its worker to carry. */
function selectorOf(operation: Operation): Readonly<Record<string, string>> {
  const spec = operation.spec?.kind;
  return spec?.case === "executionStart" ? spec.value.workerSelector : {};
}

function mayRun(worker: ConnectedWorker, operation: Operation): boolean {
  if (!worker.connected || worker.busy >= worker.capacity || !allows(worker.profiles, operation.profile)) return false;
  return Object.entries(selectorOf(operation)).every(([key, value]) => worker.labels[key] === value);
}

export class WorkerPool implements Executor {
  private readonly workers = new Map<string, ConnectedWorker>();
  /** By operation name: an operation has at most one attempt running. */
  private readonly leases = new Map<string, ActiveLease>();
  private readonly waiting: Waiter[] = [];
  /** Fencing tokens increase across restarts too (they start from the clock), so a token is never reused. */
  private nextToken = BigInt(Date.now()) * 1000n;
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly options: WorkerPoolOptions) {
    this.sweeper = setInterval(() => this.expireLeases(), Math.max(50, options.leaseTtlMs / 4));
    this.sweeper.unref();
  }

  /**
   * The worker's Connect stream: a welcome, then its instructions until it goes or `signal`
   * aborts. A worker that reconnects (`resumeWorker`, same delegation) keeps its name, its
   * leases, their slots and the instructions queued meanwhile.
   */
  async *connect(
    principal: Principal,
    request: { capacity: number; labels: Record<string, string>; resumeWorker?: string },
    signal: AbortSignal,
  ): AsyncGenerator<ConnectResponse> {
    const previous = request.resumeWorker === undefined ? undefined : this.workers.get(request.resumeWorker);
    const resumed = previous !== undefined && !previous.connected && previous.delegation === principal.delegation.name ? previous : undefined;
    const worker: ConnectedWorker = Object.assign(resumed ?? { name: `workers/${ulid()}`, busy: 0, instructions: new InstructionQueue<ConnectResponse>() }, {
      delegation: principal.delegation.name,
      profiles: principal.delegation.scope?.workerProfiles ?? [],
      labels: request.labels,
      capacity: request.capacity,
      connected: true,
    });
    this.workers.set(worker.name, worker);
    try {
      // First, before anything queued for a resumed worker.
      yield instruction({
        case: "welcome",
        value: {
          worker: worker.name,
          leaseTtl: durationFromMs(this.options.leaseTtlMs),
          heartbeatInterval: durationFromMs(Math.max(50, Math.floor(this.options.leaseTtlMs / 3))),
        },
      });
      this.grantWaiting();
      yield* worker.instructions.drain(signal);
    } finally {
      // Its leases stay until they expire: the worker may be reconnecting and still running them.
      worker.connected = false;
      this.forgetIfIdle(worker);
    }
  }

  /** A disconnected worker is kept while it holds slots, so that it can resume them. */
  private forgetIfIdle(worker: ConnectedWorker): void {
    if (!worker.connected && worker.busy === 0 && this.workers.get(worker.name) === worker) this.workers.delete(worker.name);
  }

  reserve(operation: Operation, signal: AbortSignal): Promise<Seat> {
    return new Promise<Seat>((resolve, reject) => {
      const waiter: Waiter = {
        operation,
        grant: (seat) => {
          signal.removeEventListener("abort", onAbort);
          resolve(seat);
        },
      };
      const onAbort = (): void => {
        const index = this.waiting.indexOf(waiter);
        if (index >= 0) this.waiting.splice(index, 1);
        reject(signal.reason as Error);
      };
      if (signal.aborted) {
        reject(signal.reason as Error);
        return;
      }
      signal.addEventListener("abort", onAbort);
      this.waiting.push(waiter);
      this.grantWaiting();
    });
  }

  /** Gives free slots to waiting operations, oldest first; of the workers that may run one, the least busy. */
  private grantWaiting(): void {
    for (let i = 0; i < this.waiting.length; ) {
      const waiter = this.waiting[i]!;
      let best: ConnectedWorker | undefined;
      for (const worker of this.workers.values()) {
        if (mayRun(worker, waiter.operation) && (best === undefined || worker.busy / worker.capacity < best.busy / best.capacity)) best = worker;
      }
      if (best === undefined) {
        i += 1;
        continue;
      }
      this.waiting.splice(i, 1);
      best.busy += 1;
      const worker = best;
      let released = false;
      waiter.grant({
        worker: worker.name,
        release: () => {
          if (released) return;
          released = true;
          worker.busy -= 1;
          this.forgetIfIdle(worker);
          this.grantWaiting();
        },
      });
    }
  }

  run(attempt: Attempt): Promise<Outcome> {
    const seat = attempt.seat;
    const worker = seat === undefined ? undefined : this.workers.get(seat.worker);
    if (seat === undefined || worker === undefined) {
      seat?.release();
      return Promise.resolve({ kind: "failed", cause: workerLost(`${seat?.worker ?? "the worker"} went away before the task reached it`), retryable: true });
    }
    return new Promise<Outcome>((resolve) => {
      const lease = create(LeaseSchema, { operation: attempt.operation.name, attempt: attempt.attempt, fencingToken: (this.nextToken += 1n) });
      const active: ActiveLease = {
        lease,
        worker,
        expiresAt: Date.now() + this.options.leaseTtlMs,
        attempt,
        settle: (outcome) => {
          if (this.leases.get(lease.operation) !== active) return;
          this.leases.delete(lease.operation);
          attempt.signal.removeEventListener("abort", onAbort);
          seat.release();
          resolve(outcome);
        },
      };
      const onAbort = (): void => {
        worker.instructions.push(instruction({ case: "cancellation", value: { lease, cause: attempt.signal.reason as StopCause } }));
      };
      this.leases.set(lease.operation, active);
      attempt.signal.addEventListener("abort", onAbort);
      lease.expireTime = timestampFromMs(active.expiresAt);
      worker.instructions.push(instruction({ case: "assignment", value: { lease, operation: attempt.operation, env: { ...attempt.env } } }));
      if (attempt.signal.aborted) onAbort();
    });
  }

  /** Renews the leases the worker still holds; the rest come back as revoked. */
  heartbeat(principal: Principal, leases: readonly HeldLease[]): { renewed: Lease[]; revoked: HeldLease[] } {
    const renewed: Lease[] = [];
    const revoked: HeldLease[] = [];
    for (const lease of leases) {
      const active = this.current(principal, lease);
      if (typeof active === "string") {
        revoked.push(lease);
        continue;
      }
      active.expiresAt = Date.now() + this.options.leaseTtlMs;
      active.lease.expireTime = timestampFromMs(active.expiresAt);
      renewed.push(active.lease);
    }
    return { renewed, revoked };
  }

  reportProgress(principal: Principal, request: ReportProgressRequest): void {
    const active = this.honoured(principal, request.lease!);
    if (request.message !== "" || request.percent !== undefined) active.attempt.progress(request.message, request.percent);
    if (request.usage !== undefined) active.attempt.usage?.(request.usage);
  }

  /** Keeps output the worker's task produced, under its lease (the attempt's sink refuses a gap or bytes after the end). */
  async appendOutput(principal: Principal, request: AppendOutputRequest): Promise<void> {
    const active = this.honoured(principal, request.lease!);
    if (active.attempt.output === undefined) throw outputNotKept(active.lease.operation, active.lease.attempt);
    await active.attempt.output.append(
      outputStreamName(request.stream),
      request.offset,
      request.data,
      request.end ? { truncated: request.truncated } : undefined,
    );
  }

  reportOutcome(principal: Principal, request: ReportOutcomeRequest): void {
    const active = this.honoured(principal, request.lease!);
    const usage: Budget | undefined = request.usage;
    const artifact = request.artifact;
    const extras = { ...(artifact !== undefined ? { artifact } : {}), ...(usage !== undefined ? { usage } : {}) };
    switch (request.result) {
      case AttemptResult.COMPLETED:
        active.settle({ kind: "completed", message: request.message, ...extras });
        return;
      case AttemptResult.CANCELLED:
        active.settle({ kind: "cancelled", ...extras });
        return;
      default:
        active.settle({
          kind: "failed",
          cause: request.cause ?? create(StopCauseSchema, { reason: StopReason.WORKER_ERROR, message: "the worker reported a failure without a cause" }),
          retryable: request.retryable,
          ...extras,
        });
    }
  }

  /**
   * The live lease `lease` names, if it is the current one and the caller's; else why not. A
   * task another worker holds is answered as one no worker runs: a worker learns nothing of the
   * tasks it does not hold (README, Errors).
   */
  private current(principal: Principal, lease: LeaseIdentity): ActiveLease | string {
    const active = this.leases.get(lease.operation);
    if (active === undefined || active.worker.delegation !== principal.delegation.name) return "no attempt of it is running on this worker";
    if (active.lease.fencingToken !== lease.fencingToken || active.lease.attempt !== lease.attempt) return "a newer lease superseded it";
    return active;
  }

  private honoured(principal: Principal, lease: Lease): ActiveLease {
    const active = this.current(principal, lease);
    if (typeof active === "string") throw leaseRejected(lease.operation, lease.fencingToken, active);
    return active;
  }

  /** Expired leases end their attempts: `worker_lost`, or cancelled if a cancel was waiting for the worker's confirmation. */
  private expireLeases(): void {
    const now = Date.now();
    for (const active of [...this.leases.values()]) {
      if (active.expiresAt > now) continue;
      // Tell the worker too, in case it is alive but cut off from heartbeats.
      active.worker.instructions.push(instruction({ case: "cancellation", value: { lease: active.lease, cause: workerLost("the lease expired") } }));
      const seconds = this.options.leaseTtlMs / 1000;
      active.settle(
        active.attempt.signal.aborted
          ? { kind: "cancelled" }
          : { kind: "failed", cause: workerLost(`${active.worker.name} did not renew its lease within ${seconds} s`), retryable: true },
      );
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const worker of this.workers.values()) worker.instructions.close();
  }
}
