// What the measured store counts from a write's answer: only what committed, a modification's
// settlement as of its last run (a store retries a transaction by running it again), a failed
// attempt's sandbox, and the time of each write by method — over a stand-in store whose answers
// the test chooses.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { BudgetSchema } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { OperationEventSchema, type OperationEvent } from "../../src/gen/agentmachine/v1/event_pb.js";
import { StopReason, OperationSchema, type Operation } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { EventType, OperationType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { measuredStore } from "../../src/metrics/measured-store.js";
import { PlaneMetrics } from "../../src/metrics/plane-metrics.js";
import type { Modification, ModifyResult, OperationStore, StoredEvent } from "../../src/store/store.js";
import { storeWrites } from "../../src/store/store-writes.js";
import { parseExposition, total } from "../helpers/prometheus.js";

function running(usage: { wallClockSeconds?: bigint; tokens?: bigint } = {}): Operation {
  return create(OperationSchema, { name: "operations/01J0000000000000000000000", type: OperationType.EXECUTION_START, state: TaskState.RUNNING, usage });
}

const execution = running();

function stored(event: OperationEvent): StoredEvent {
  return { event, profile: "profiles/p", operationType: OperationType.EXECUTION_START, labels: {} };
}

function failure(reason: StopReason, state = TaskState.FAILED): OperationEvent {
  const type = state === TaskState.RETRYING ? EventType.RETRY : EventType.FAILURE;
  const attributes =
    state === TaskState.RETRYING ? { case: "retry" as const, value: { cause: { reason } } } : { case: "failure" as const, value: { cause: { reason } } };
  return create(OperationEventSchema, { operation: execution.name, type, state, attributes });
}

/** A store whose modifyOperation runs the modification on each of `runs` (a retried transaction), and commits the last unless `refuse`. */
function storeRunning(runs: Operation[], refuse = false) {
  let modifications = 0;
  const store = {
    // Every write but the one under test answers nothing.
    ...Object.fromEntries(storeWrites.map((method) => [method, async () => undefined])),
    exclusive: true,
    modifications: () => modifications,
    async modifyOperation(_name: string, modify: Modification): Promise<ModifyResult> {
      modifications += 1;
      let change: ReturnType<Modification>;
      for (const run of runs) change = modify(create(OperationSchema, run));
      if (refuse || change === undefined) return { kind: "unchanged", operation: execution };
      return { kind: "modified", operation: change.operation, ...(change.event ? { event: stored(change.event) } : {}) };
    },
  };
  return store;
}

async function read(metrics: PlaneMetrics) {
  const exposition = parseExposition(await metrics.registry.metrics());
  return (name: string, labels: Record<string, string> = {}) => total(exposition, name, labels);
}

describe("the measured store", () => {
  it("counts the settlement of a modification's last run, once it committed", async () => {
    const metrics = new PlaneMetrics();
    // The first run sees 3 s of wall clock; the retried transaction, 5 s.
    const runs = [running({ wallClockSeconds: 3n }), running({ wallClockSeconds: 5n, tokens: 40n })];
    const store = storeRunning(runs);
    const measured = measuredStore(store as unknown as OperationStore, metrics);
    await measured.modifyOperation(execution.name, (operation) => ({
      operation,
      event: create(OperationEventSchema, { operation: operation.name, type: EventType.COMPLETE, state: TaskState.COMPLETED }),
      settle: { spent: create(BudgetSchema, { wallClockSeconds: operation.usage?.wallClockSeconds ?? 0n, tokens: operation.usage?.tokens ?? 0n }) },
    }));
    const value = await read(metrics);
    expect(value("amctl_budget_consumed_wall_clock_seconds_total")).toBe(5);
    expect(value("amctl_budget_consumed_tokens_total")).toBe(40);
    expect(value("amctl_events_appended_total", { event_type: "complete" })).toBe(1);
    expect(value("amctl_operation_state_changes_total", { operation_type: "agent_machine.execution.start", state: "completed" })).toBe(1);
    expect(value("amctl_store_commit_duration_seconds_count", { method: "modifyOperation" })).toBe(1);
  });

  it("counts nothing of a modification that did not commit", async () => {
    const metrics = new PlaneMetrics();
    const measured = measuredStore(storeRunning([execution], true) as unknown as OperationStore, metrics);
    await measured.modifyOperation(execution.name, (operation) => ({
      operation,
      event: failure(StopReason.EXIT_CODE),
      settle: { spent: create(BudgetSchema, { tokens: 7n }) },
    }));
    const value = await read(metrics);
    expect(value("amctl_budget_consumed_tokens_total")).toBe(0);
    expect(value("amctl_events_appended_total")).toBe(0);
    expect(value("amctl_operation_state_changes_total")).toBe(0);
    // The write was made all the same, and timed.
    expect(value("amctl_store_commit_duration_seconds_count", { method: "modifyOperation" })).toBe(1);
  });

  it("counts attempts whose sandbox failed, whether the task retries or fails; progress changes no state", async () => {
    const metrics = new PlaneMetrics();
    const measured = measuredStore(storeRunning([execution]) as unknown as OperationStore, metrics);
    for (const event of [
      failure(StopReason.SANDBOX_FAILED, TaskState.RETRYING),
      failure(StopReason.SANDBOX_FAILED),
      failure(StopReason.EXIT_CODE),
      create(OperationEventSchema, {
        operation: execution.name,
        type: EventType.PROGRESS,
        state: TaskState.RUNNING,
        attributes: { case: "progress", value: { message: "half way" } },
      }),
    ]) {
      await measured.modifyOperation(execution.name, (operation) => ({ operation, event }));
    }
    const value = await read(metrics);
    expect(value("amctl_sandbox_failures_total")).toBe(2);
    expect(value("amctl_events_appended_total")).toBe(4);
    expect(value("amctl_events_appended_total", { event_type: "progress" })).toBe(1);
    expect(value("amctl_operation_state_changes_total")).toBe(3);
  });

  it("passes everything else to the store itself", async () => {
    const metrics = new PlaneMetrics();
    const store = storeRunning([execution]);
    const measured = measuredStore(store as unknown as OperationStore & typeof store, metrics);
    expect(measured.exclusive).toBe(true);
    await measured.modifyOperation(execution.name, () => undefined);
    expect(measured.modifications()).toBe(1);
  });
});
