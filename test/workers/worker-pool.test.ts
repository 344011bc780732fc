// The worker pool without sockets: which connected worker a task may go to (worker_profiles,
// labels, free capacity, arrival order, least busy), the lease it runs under (assignment,
// reports, fencing, expiry, renewal), cancellation, workers going away, and shutdown. Workers
// are driven by iterating `pool.connect` directly; time is the fake clock's.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Attempt, Outcome, Seat } from "../../src/executors/executor.js";
import { ArtifactSchema, type Artifact } from "../../src/gen/agentmachine/v1/artifact_pb.js";
import { BudgetSchema, type Budget } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { DelegationSchema } from "../../src/gen/agentmachine/v1/delegation_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { StopReason, OperationSchema, StopCauseSchema, type Operation, type StopCause } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { OutputStream } from "../../src/gen/agentmachine/v1/output_pb.js";
import {
  AppendOutputRequestSchema,
  AttemptResult,
  HeldLeaseSchema,
  LeaseSchema,
  ReportOutcomeRequestSchema,
  ReportProgressRequestSchema,
  type ConnectResponse,
  type Lease,
  type TaskAssignment,
  type TaskCancellation,
} from "../../src/gen/agentmachine/v1/worker_service_pb.js";
import type { Principal } from "../../src/governance/authority.js";
import { WorkerPool } from "../../src/workers/worker-pool.js";

const TTL_MS = 1000;
/** The pool checks leases every TTL/4, so a lease ends at most this long after it expired. */
const EXPIRY_MS = TTL_MS + TTL_MS / 4;

// Captured before the fake timers replace it: one turn of the event loop lets every stream,
// promise and generator in flight catch up without moving the fake clock.
const realSetImmediate = setImmediate;
const flush = (): Promise<void> => new Promise((resolve) => realSetImmediate(resolve));

const PENDING = Symbol("pending");

/** A lease as a worker's heartbeat names it. */
const held = ({ operation, attempt, fencingToken }: Lease) => create(HeldLeaseSchema, { operation, attempt, fencingToken });
/** What `promise` settled with after the pool had a turn, or PENDING. */
async function peek<T>(promise: Promise<T>): Promise<T | typeof PENDING> {
  await flush();
  return Promise.race([promise, Promise.resolve(PENDING)]);
}

function principal(name: string, workerProfiles: string[] = ["*"]): Principal {
  return { delegation: create(DelegationSchema, { name: `delegations/${name}`, scope: { workerProfiles } }), chain: [] };
}

function execution(id: string, workerSelector: Record<string, string> = {}, profile = "profiles/p"): Operation {
  return create(OperationSchema, {
    name: `operations/${id}`,
    profile,
    spec: { kind: { case: "executionStart", value: { argv: ["true"], workerSelector } } },
  });
}

interface FakeWorker {
  /** `workers/{id}`, as the welcome named it. */
  name: string;
  received: ConnectResponse[];
  assignments(): TaskAssignment[];
  cancellations(): TaskCancellation[];
  /** Whether the stream has ended. */
  ended(): boolean;
  /** Ends the stream from the worker's side, and waits for it to end. */
  disconnect(): Promise<void>;
}

async function connectWorker(
  pool: WorkerPool,
  who: Principal,
  request: { capacity: number; labels: Record<string, string>; resumeWorker?: string } = { capacity: 1, labels: {} },
): Promise<FakeWorker> {
  const controller = new AbortController();
  const received: ConnectResponse[] = [];
  let ended = false;
  const done = (async () => {
    for await (const response of pool.connect(who, request, controller.signal)) received.push(response);
    ended = true;
  })();
  await flush();
  const welcome = received[0]?.instruction;
  if (welcome?.case !== "welcome") throw new Error(`expected a welcome first, got ${welcome?.case}`);
  return {
    name: welcome.value.worker,
    received,
    assignments: () => received.flatMap(({ instruction }) => (instruction.case === "assignment" ? [instruction.value] : [])),
    cancellations: () => received.flatMap(({ instruction }) => (instruction.case === "cancellation" ? [instruction.value] : [])),
    ended: () => ended,
    disconnect: async () => {
      controller.abort();
      await done;
    },
  };
}

function attemptOf(operation: Operation, seat: Seat | undefined, attempt = 1) {
  const controller = new AbortController();
  const progress = vi.fn<(message: string, percent?: number) => void>();
  const usage = vi.fn();
  const output = vi.fn<(stream: string, offset: bigint, data: Uint8Array, end?: { truncated: boolean }) => Promise<void>>(() => Promise.resolve());
  const value: Attempt = {
    operation,
    attempt,
    workspace: "/nonexistent/workspace",
    signal: controller.signal,
    env: { AMCTL_OPERATION: operation.name, AMCTL_TOKEN: "secret-token" },
    progress,
    spawned: vi.fn(),
    usage,
    output: { append: output },
    ...(seat !== undefined ? { seat } : {}),
  };
  return { attempt: value, controller, progress, usage, output };
}

/** Reserves a seat for `operation` (on whichever worker may take it) and runs its attempt: the run, its lease and its attempt's controls. */
async function runOn(pool: WorkerPool, worker: FakeWorker, operation: Operation, attemptNumber = 1) {
  const seat = await pool.reserve(operation, new AbortController().signal);
  expect(seat.worker).toBe(worker.name);
  const parts = attemptOf(operation, seat, attemptNumber);
  const run = pool.run(parts.attempt);
  await flush();
  const assignment = worker.assignments().find((a) => a.lease?.operation === operation.name && a.lease.attempt === attemptNumber);
  if (assignment === undefined) throw new Error(`${worker.name} got no assignment for ${operation.name}`);
  return { ...parts, seat, run, lease: assignment.lease!, assignment };
}

function outcomeRequest(
  lease: Lease,
  result: AttemptResult,
  init: { message?: string; cause?: StopCause; retryable?: boolean; artifact?: Artifact; usage?: Budget } = {},
) {
  return create(ReportOutcomeRequestSchema, { lease, result, ...init });
}

/** The error `call` threw; fails the test if it did not throw. */
function refusal(call: () => void): ConnectError {
  try {
    call();
  } catch (error) {
    expect(error).toBeInstanceOf(ConnectError);
    return error as ConnectError;
  }
  throw new Error("expected the call to be refused");
}

function expectLeaseRejected(call: () => void): void {
  const error = refusal(call);
  expect(error.code).toBe(Code.FailedPrecondition);
  expect(error.findDetails(ErrorInfoSchema).map((info) => info.reason)).toEqual(["LEASE_REJECTED"]);
}

let pool: WorkerPool;

beforeEach(() => {
  vi.useFakeTimers();
  pool = new WorkerPool({ leaseTtlMs: TTL_MS });
});

afterEach(() => {
  pool.close();
  vi.useRealTimers();
});

describe("reserve", () => {
  it("waits for a worker whose worker_profiles allow the profile and whose labels include the selector's, then resolves on it", async () => {
    const operation = execution("a", { gpu: "a100", zone: "eu" });
    const seat = pool.reserve(operation, new AbortController().signal);
    expect(await peek(seat)).toBe(PENDING);

    await connectWorker(pool, principal("other-profile", ["profiles/other"]), { capacity: 4, labels: { gpu: "a100", zone: "eu" } });
    await connectWorker(pool, principal("no-profiles", []), { capacity: 4, labels: { gpu: "a100", zone: "eu" } });
    await connectWorker(pool, principal("missing-label"), { capacity: 4, labels: { gpu: "a100" } });
    await connectWorker(pool, principal("wrong-value"), { capacity: 4, labels: { gpu: "a100", zone: "us" } });
    expect(await peek(seat)).toBe(PENDING);

    const exact = await connectWorker(pool, principal("exact", ["profiles/p"]), { capacity: 1, labels: { gpu: "a100", zone: "eu", extra: "x" } });
    expect(await peek(seat)).toMatchObject({ worker: exact.name });

    const any = await connectWorker(pool, principal("any", ["*"]), { capacity: 1, labels: { gpu: "a100", zone: "eu" } });
    expect(await pool.reserve(execution("b", { gpu: "a100", zone: "eu" }), new AbortController().signal)).toMatchObject({ worker: any.name });
  });

  it("gives a worker of capacity 1 one seat; the next waits until the seat is released (once, however often release is called)", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const first = await pool.reserve(execution("a"), new AbortController().signal);
    expect(first.worker).toBe(worker.name);
    const second = pool.reserve(execution("b"), new AbortController().signal);
    const third = pool.reserve(execution("c"), new AbortController().signal);
    expect(await peek(second)).toBe(PENDING);

    first.release();
    first.release();
    expect(await peek(second)).toMatchObject({ worker: worker.name });
    expect(await peek(third)).toBe(PENDING);
  });

  it("frees a seat when its attempt's outcome is reported", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const first = await runOn(pool, worker, execution("a"));
    const next = pool.reserve(execution("b"), new AbortController().signal);
    expect(await peek(next)).toBe(PENDING);

    pool.reportOutcome(principal("w"), outcomeRequest(first.lease, AttemptResult.COMPLETED));
    expect(await first.run).toMatchObject({ kind: "completed" });
    expect(await peek(next)).toMatchObject({ worker: worker.name });
  });

  it("grants waiting reserves in arrival order", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const held = await pool.reserve(execution("held"), new AbortController().signal);
    const granted: string[] = [];
    const waiting = ["a", "b", "c"].map((id) =>
      pool.reserve(execution(id), new AbortController().signal).then((seat) => {
        granted.push(id);
        return seat;
      }),
    );
    await flush();
    expect(granted).toEqual([]);

    held.release();
    await flush();
    expect(granted).toEqual(["a"]);
    (await waiting[0]!).release();
    await flush();
    expect(granted).toEqual(["a", "b"]);
    (await waiting[1]!).release();
    await flush();
    expect(granted).toEqual(["a", "b", "c"]);
    expect((await waiting[2]!).worker).toBe(worker.name);
  });

  it("puts a task on the least busy suitable worker (busy / capacity)", async () => {
    const small = await connectWorker(pool, principal("small"), { capacity: 2, labels: {} });
    expect((await pool.reserve(execution("a"), new AbortController().signal)).worker).toBe(small.name); // small: 1/2
    const large = await connectWorker(pool, principal("large"), { capacity: 4, labels: {} });
    expect((await pool.reserve(execution("b"), new AbortController().signal)).worker).toBe(large.name); // large: 1/4
    expect((await pool.reserve(execution("c"), new AbortController().signal)).worker).toBe(large.name); // large: 2/4
    const idle = await connectWorker(pool, principal("idle"), { capacity: 1, labels: {} });
    expect((await pool.reserve(execution("d"), new AbortController().signal)).worker).toBe(idle.name);
  });

  it("rejects a waiting reserve with its signal's reason when the signal aborts, and never grants it later", async () => {
    const controller = new AbortController();
    const seat = pool.reserve(execution("a"), controller.signal);
    expect(await peek(seat)).toBe(PENDING);
    const reason = new Error("the task was cancelled while queued");
    controller.abort(reason);
    await expect(seat).rejects.toBe(reason);

    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    // The worker's only slot is still free: the aborted reserve did not take it.
    expect((await pool.reserve(execution("b"), new AbortController().signal)).worker).toBe(worker.name);
    const already = new AbortController();
    already.abort(reason);
    await expect(pool.reserve(execution("c"), already.signal)).rejects.toBe(reason);
  });
});

describe("run", () => {
  it("sends the worker an assignment with the lease, the operation and the env", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const operation = execution("a");
    const { assignment, lease, attempt } = await runOn(pool, worker, operation, 3);
    expect(lease).toMatchObject({ operation: "operations/a", attempt: 3 });
    expect(lease.fencingToken).toBeGreaterThan(0n);
    expect(lease.expireTime).toEqual(timestampFromMs(Date.now() + TTL_MS));
    expect(assignment.operation).toEqual(operation);
    expect(assignment.env).toEqual({ AMCTL_OPERATION: "operations/a", AMCTL_TOKEN: "secret-token" });
    expect(assignment.env).not.toBe(attempt.env);
  });

  it("forwards reported progress to attempt.progress and usage to attempt.usage", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const { lease, progress, usage, run } = await runOn(pool, worker, execution("a"));
    const used = create(BudgetSchema, { wallClockSeconds: 4n, cpuGpuComputeSeconds: 2n });

    pool.reportProgress(principal("w"), create(ReportProgressRequestSchema, { lease, message: "halfway", percent: 50 }));
    pool.reportProgress(principal("w"), create(ReportProgressRequestSchema, { lease, message: "no percent" }));
    pool.reportProgress(principal("w"), create(ReportProgressRequestSchema, { lease, usage: used }));

    expect(progress.mock.calls).toEqual([
      ["halfway", 50],
      ["no percent", undefined],
    ]);
    expect(usage.mock.calls).toEqual([[used]]);
    expect(await peek(run)).toBe(PENDING);
  });

  it("hands appended output to the attempt's output sink, stream, offset, bytes and end as sent", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const { lease, output, run } = await runOn(pool, worker, execution("a"));
    const data = new TextEncoder().encode("hello\n");
    await pool.appendOutput(principal("w"), create(AppendOutputRequestSchema, { lease, stream: OutputStream.STDOUT, offset: 0n, data }));
    await pool.appendOutput(principal("w"), create(AppendOutputRequestSchema, { lease, stream: OutputStream.STDERR, offset: 0n, end: true, truncated: true }));
    expect(output.mock.calls).toEqual([
      ["stdout", 0n, data, undefined],
      ["stderr", 0n, new Uint8Array(), { truncated: true }],
    ]);
    expect(await peek(run)).toBe(PENDING);
  });

  it("resolves with kind completed, the message, artifact and usage on a COMPLETED report", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const { lease, run } = await runOn(pool, worker, execution("a"));
    const artifact = create(ArtifactSchema, { kind: { case: "localAgentExecution", value: { exitCode: 0, stdoutBytes: 3n } } });
    const usage = create(BudgetSchema, { wallClockSeconds: 1n });
    pool.reportOutcome(principal("w"), outcomeRequest(lease, AttemptResult.COMPLETED, { message: "done", artifact, usage }));
    const outcome = await run;
    expect(outcome).toEqual({ kind: "completed", message: "done", artifact, usage });
    expect(outcome.kind === "completed" && outcome.artifact).toBe(artifact);
  });

  it("resolves with kind failed, the cause and the retryable flag on a FAILED report", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 2, labels: {} });
    const cause = create(StopCauseSchema, { reason: StopReason.EXIT_CODE, message: "exited with 2" });
    const artifact = create(ArtifactSchema, { kind: { case: "localAgentExecution", value: { exitCode: 2 } } });

    const fatal = await runOn(pool, worker, execution("a"));
    pool.reportOutcome(principal("w"), outcomeRequest(fatal.lease, AttemptResult.FAILED, { cause, retryable: false, artifact }));
    expect(await fatal.run).toEqual({ kind: "failed", cause, retryable: false, artifact });

    const retryable = await runOn(pool, worker, execution("b"));
    pool.reportOutcome(principal("w"), outcomeRequest(retryable.lease, AttemptResult.FAILED, { cause, retryable: true }));
    expect(await retryable.run).toEqual({ kind: "failed", cause, retryable: true });
  });

  it("gives a FAILED report without a cause the cause worker_error", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const { lease, run } = await runOn(pool, worker, execution("a"));
    pool.reportOutcome(principal("w"), outcomeRequest(lease, AttemptResult.FAILED, { retryable: true }));
    expect(await run).toMatchObject({ kind: "failed", cause: { reason: StopReason.WORKER_ERROR }, retryable: true });
  });

  it("resolves with kind cancelled and the usage on a CANCELLED report", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const { lease, run } = await runOn(pool, worker, execution("a"));
    const usage = create(BudgetSchema, { wallClockSeconds: 7n });
    pool.reportOutcome(principal("w"), outcomeRequest(lease, AttemptResult.CANCELLED, { usage }));
    expect(await run).toEqual({ kind: "cancelled", usage });
  });
});

describe("fencing", () => {
  it("refuses reports under a wrong fencing token, a wrong attempt, an operation without a lease or another delegation, LEASE_REJECTED", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const { lease, run, progress, output } = await runOn(pool, worker, execution("a"));
    const wrongToken = create(LeaseSchema, { operation: lease.operation, attempt: lease.attempt, fencingToken: lease.fencingToken + 1n });
    const wrongAttempt = create(LeaseSchema, { operation: lease.operation, attempt: lease.attempt + 1, fencingToken: lease.fencingToken });
    const noLease = create(LeaseSchema, { operation: "operations/none", attempt: lease.attempt, fencingToken: lease.fencingToken });
    const cases: [string, Principal, Lease][] = [
      ["wrong fencing token", principal("w"), wrongToken],
      ["wrong attempt", principal("w"), wrongAttempt],
      ["no lease on the operation", principal("w"), noLease],
      ["another worker delegation", principal("intruder"), lease],
    ];
    for (const [, who, refused] of cases) {
      expectLeaseRejected(() => pool.reportProgress(who, create(ReportProgressRequestSchema, { lease: refused, message: "sneaky" })));
      expectLeaseRejected(() => pool.reportOutcome(who, outcomeRequest(refused, AttemptResult.COMPLETED)));
      const appended = await pool
        .appendOutput(who, create(AppendOutputRequestSchema, { lease: refused, stream: OutputStream.STDOUT, data: new Uint8Array([1]) }))
        .catch((error: unknown) => error);
      expectLeaseRejected(() => {
        throw appended;
      });
    }
    const error = refusal(() => pool.reportOutcome(principal("w"), outcomeRequest(wrongToken, AttemptResult.COMPLETED)));
    expect(error.findDetails(ErrorInfoSchema)[0]?.metadata).toEqual({ operation: "operations/a", fencing_token: String(wrongToken.fencingToken) });

    expect(progress).not.toHaveBeenCalled();
    expect(output).not.toHaveBeenCalled();
    expect(await peek(run)).toBe(PENDING);
  });

  it("answers a report under another worker's lease exactly as one on a task no worker runs (no existence oracle)", async () => {
    const worker = await connectWorker(pool, principal("w", ["profiles/theirs"]), { capacity: 1, labels: {} });
    const { lease } = await runOn(pool, worker, execution("theirs", {}, "profiles/theirs"));
    const intruder = principal("intruder", ["profiles/mine"]);
    const shape = (refused: Lease) => {
      const error = refusal(() => pool.reportProgress(intruder, create(ReportProgressRequestSchema, { lease: refused, message: "probe" })));
      return { code: error.code, message: error.rawMessage.replaceAll(refused.operation, "NAME"), info: error.findDetails(ErrorInfoSchema)[0]?.reason };
    };
    const nowhere = (probe: Lease) => create(LeaseSchema, { ...probe, operation: "operations/none" });
    expect(shape(lease)).toEqual(shape(nowhere(lease)));
    // The same goes for a guessed fencing token.
    const guessed = create(LeaseSchema, { ...lease, fencingToken: lease.fencingToken + 1n });
    expect(shape(guessed)).toEqual(shape(nowhere(guessed)));
  });

  it("refuses a report under a lease whose run has resolved", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const { lease, run } = await runOn(pool, worker, execution("a"));
    pool.reportOutcome(principal("w"), outcomeRequest(lease, AttemptResult.COMPLETED, { message: "first" }));
    expect(await run).toMatchObject({ kind: "completed", message: "first" });

    expectLeaseRejected(() => pool.reportOutcome(principal("w"), outcomeRequest(lease, AttemptResult.FAILED, { retryable: true })));
    expectLeaseRejected(() => pool.reportProgress(principal("w"), create(ReportProgressRequestSchema, { lease, message: "late" })));

    // The next attempt's lease does not honour the old one either.
    const next = await runOn(pool, worker, execution("a"), 2);
    expectLeaseRejected(() => pool.reportOutcome(principal("w"), outcomeRequest(lease, AttemptResult.COMPLETED)));
    expect(await peek(next.run)).toBe(PENDING);
  });

  it("issues strictly increasing fencing tokens, also after a restart", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 3, labels: {} });
    const tokens: bigint[] = [];
    const runs = [];
    for (const id of ["a", "b", "c"]) runs.push(await runOn(pool, worker, execution(id)));
    tokens.push(...runs.map((r) => r.lease.fencingToken));
    pool.reportOutcome(principal("w"), outcomeRequest(runs[0]!.lease, AttemptResult.FAILED, { retryable: true }));
    await runs[0]!.run;
    const again = await runOn(pool, worker, execution("a"), 2);
    tokens.push(again.lease.fencingToken);
    for (let i = 1; i < tokens.length; i += 1) expect(tokens[i]!).toBeGreaterThan(tokens[i - 1]!);

    // A new pool (a restarted server) a millisecond later starts above every token of the old one.
    vi.advanceTimersByTime(1);
    const restarted = new WorkerPool({ leaseTtlMs: TTL_MS });
    try {
      const later = await connectWorker(restarted, principal("w"), { capacity: 1, labels: {} });
      expect((await runOn(restarted, later, execution("d"))).lease.fencingToken).toBeGreaterThan(tokens.at(-1)!);
    } finally {
      restarted.close();
    }
  });
});

describe("lease expiry", () => {
  it("fails the attempt with worker_lost (retryable) when no heartbeat renews the lease within the TTL, and tells the worker", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const { lease, run } = await runOn(pool, worker, execution("a"));
    const next = pool.reserve(execution("b"), new AbortController().signal);

    await vi.advanceTimersByTimeAsync(TTL_MS - 1);
    expect(await peek(run)).toBe(PENDING);
    await vi.advanceTimersByTimeAsync(EXPIRY_MS - (TTL_MS - 1));
    const outcome = await peek(run);
    expect(outcome).toMatchObject({ kind: "failed", retryable: true, cause: { reason: StopReason.WORKER_LOST } });

    await flush();
    expect(worker.cancellations()).toEqual([expect.objectContaining({ lease, cause: expect.objectContaining({ reason: StopReason.WORKER_LOST }) })]);
    // The seat came back with the lease.
    expect(await peek(next)).toMatchObject({ worker: worker.name });
  });

  it("keeps a lease alive for as long as heartbeats renew it within the TTL, returning it in renewed", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const { lease, run } = await runOn(pool, worker, execution("a"));
    for (let elapsed = 0; elapsed < 3 * TTL_MS; elapsed += TTL_MS / 2) {
      await vi.advanceTimersByTimeAsync(TTL_MS / 2);
      const { renewed, revoked } = pool.heartbeat(principal("w"), [held(lease)]);
      expect(revoked).toEqual([]);
      expect(renewed).toHaveLength(1);
      expect(renewed[0]).toMatchObject({ operation: lease.operation, attempt: lease.attempt, fencingToken: lease.fencingToken });
      expect(renewed[0]!.expireTime).toEqual(timestampFromMs(Date.now() + TTL_MS));
    }
    expect(await peek(run)).toBe(PENDING);
    expect(worker.cancellations()).toEqual([]);

    await vi.advanceTimersByTimeAsync(EXPIRY_MS);
    expect(await peek(run)).toMatchObject({ kind: "failed", cause: { reason: StopReason.WORKER_LOST } });
  });

  it("returns unknown, stale and other delegations' leases in revoked", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 2, labels: {} });
    const expiring = await runOn(pool, worker, execution("a"));
    await vi.advanceTimersByTimeAsync(EXPIRY_MS);
    expect(await peek(expiring.run)).toMatchObject({ kind: "failed" });
    const live = await runOn(pool, worker, execution("b"));
    const unknown = create(LeaseSchema, { operation: "operations/none", attempt: 1, fencingToken: 1n });

    const answer = pool.heartbeat(principal("w"), [held(expiring.lease), held(unknown), held(live.lease)]);
    expect(answer.revoked).toEqual([held(expiring.lease), held(unknown)]);
    expect(answer.renewed.map((l) => l.fencingToken)).toEqual([live.lease.fencingToken]);
    expect(pool.heartbeat(principal("intruder"), [held(live.lease)])).toEqual({ renewed: [], revoked: [held(live.lease)] });
  });
});

describe("cancel", () => {
  it("sends the worker a cancellation with the abort reason; the worker's CANCELLED report resolves the run as cancelled", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const { lease, run, controller } = await runOn(pool, worker, execution("a"));
    const cause = create(StopCauseSchema, { reason: StopReason.CANCELLED, message: "cancelled by the operator" });
    controller.abort(cause);
    await flush();
    expect(worker.cancellations()).toEqual([expect.objectContaining({ lease, cause })]);
    expect(await peek(run)).toBe(PENDING);

    pool.reportOutcome(principal("w"), outcomeRequest(lease, AttemptResult.CANCELLED));
    expect(await run).toEqual({ kind: "cancelled" });
  });

  it("cancels at once an attempt whose signal was aborted before it was run", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const seat = await pool.reserve(execution("a"), new AbortController().signal);
    const { attempt, controller } = attemptOf(execution("a"), seat);
    const cause = create(StopCauseSchema, { reason: StopReason.CANCELLED, message: "too late" });
    controller.abort(cause);
    const run = pool.run(attempt);
    await flush();
    expect(worker.received.slice(1).map(({ instruction }) => instruction.case)).toEqual(["assignment", "cancellation"]);
    expect(worker.cancellations()[0]?.cause).toBe(cause);
    pool.reportOutcome(principal("w"), outcomeRequest(worker.assignments()[0]!.lease!, AttemptResult.CANCELLED));
    expect(await run).toEqual({ kind: "cancelled" });
  });

  it("resolves the run as cancelled, not worker_lost, when the worker never answers a cancellation and the lease expires", async () => {
    const worker = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const { run, controller } = await runOn(pool, worker, execution("a"));
    controller.abort(create(StopCauseSchema, { reason: StopReason.CANCELLED, message: "stop" }));
    await vi.advanceTimersByTimeAsync(TTL_MS / 2);
    expect(await peek(run)).toBe(PENDING);
    await vi.advanceTimersByTimeAsync(EXPIRY_MS);
    expect(await peek(run)).toEqual({ kind: "cancelled" });
  });
});

describe("workers going away", () => {
  it("no longer offers a worker whose stream ended to reserve", async () => {
    const gone = await connectWorker(pool, principal("gone"), { capacity: 4, labels: {} });
    await gone.disconnect();
    expect(gone.ended()).toBe(true);

    const seat = pool.reserve(execution("a"), new AbortController().signal);
    expect(await peek(seat)).toBe(PENDING);
    const fresh = await connectWorker(pool, principal("fresh"), { capacity: 1, labels: {} });
    expect(await peek(seat)).toMatchObject({ worker: fresh.name });
  });

  it("holds an assignment for a worker that went away until it resumes, or fails it worker_lost when its lease expires", async () => {
    const gone = await connectWorker(pool, principal("gone"), { capacity: 1, labels: {} });
    const granted = await pool.reserve(execution("a"), new AbortController().signal);
    await gone.disconnect();
    const seat: Seat = { worker: granted.worker, release: vi.fn(granted.release) };

    const run: Promise<Outcome> = pool.run(attemptOf(execution("a"), seat).attempt);
    await vi.advanceTimersByTimeAsync(EXPIRY_MS);
    expect(await peek(run)).toMatchObject({ kind: "failed", retryable: true, cause: { reason: StopReason.WORKER_LOST } });
    expect(seat.release).toHaveBeenCalledOnce();
    expect(gone.assignments()).toEqual([]);
    expect(await pool.run(attemptOf(execution("b"), undefined).attempt)).toMatchObject({
      kind: "failed",
      retryable: true,
      cause: { reason: StopReason.WORKER_LOST },
    });

    const back = await connectWorker(pool, principal("back"), { capacity: 1, labels: {} });
    const held = await pool.reserve(execution("c"), new AbortController().signal);
    await back.disconnect();
    void pool.run(attemptOf(execution("c"), held).attempt);
    const resumed = await connectWorker(pool, principal("back"), { capacity: 1, labels: {}, resumeWorker: back.name });
    await flush();
    expect(resumed.assignments().map((a) => a.lease?.operation)).toEqual(["operations/c"]);
  });

  it("does not let another delegation resume a worker", async () => {
    const first = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    await runOn(pool, first, execution("a"));
    await first.disconnect();
    const intruder = await connectWorker(pool, principal("x"), { capacity: 1, labels: {}, resumeWorker: first.name });
    expect(intruder.name).not.toBe(first.name);
  });

  it("keeps a lease after its worker's stream ended: the reconnected worker may renew it and report", async () => {
    const first = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const { lease, run } = await runOn(pool, first, execution("a"));
    await first.disconnect();
    await vi.advanceTimersByTimeAsync(TTL_MS / 2);
    expect(await peek(run)).toBe(PENDING);

    await connectWorker(pool, principal("w"), { capacity: 1, labels: {}, resumeWorker: first.name });
    expect(pool.heartbeat(principal("w"), [held(lease)]).renewed).toHaveLength(1);
    pool.reportOutcome(principal("w"), outcomeRequest(lease, AttemptResult.COMPLETED, { message: "done" }));
    expect(await run).toMatchObject({ kind: "completed", message: "done" });
  });

  // A lease follows its worker across reconnects (resumeWorker): a cancel made while the worker
  // was away, or after it came back, reaches its new stream.
  it("delivers a cancel to the stream of a worker that reconnected while running the task", async () => {
    const first = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const { lease, run, controller } = await runOn(pool, first, execution("a"));
    await first.disconnect();
    const second = await connectWorker(pool, principal("w"), { capacity: 1, labels: {}, resumeWorker: first.name });
    expect(second.name).toBe(first.name);
    expect(pool.heartbeat(principal("w"), [held(lease)]).renewed).toHaveLength(1);

    controller.abort(create(StopCauseSchema, { reason: StopReason.CANCELLED, message: "stop" }));
    await flush();
    expect(second.cancellations().map((c) => c.lease?.fencingToken)).toEqual([lease.fencingToken]);
    pool.reportOutcome(principal("w"), outcomeRequest(lease, AttemptResult.CANCELLED));
    expect(await run).toEqual({ kind: "cancelled" });
  });

  it("counts a task still running on a reconnected worker against its capacity", async () => {
    const first = await connectWorker(pool, principal("w"), { capacity: 1, labels: {} });
    const { lease } = await runOn(pool, first, execution("a"));
    await first.disconnect();
    await connectWorker(pool, principal("w"), { capacity: 1, labels: {}, resumeWorker: first.name });
    expect(pool.heartbeat(principal("w"), [held(lease)]).renewed).toHaveLength(1);
    expect(await peek(pool.reserve(execution("b"), new AbortController().signal))).toBe(PENDING);
  });
});

describe("close", () => {
  it("ends every worker's stream", async () => {
    const workers = await Promise.all([connectWorker(pool, principal("a")), connectWorker(pool, principal("b"), { capacity: 2, labels: { zone: "eu" } })]);
    expect(workers.map((w) => w.ended())).toEqual([false, false]);
    pool.close();
    await flush();
    expect(workers.map((w) => w.ended())).toEqual([true, true]);
  });
});
