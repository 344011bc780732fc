// The lifecycle table: every pair of states, legal or not, with the event it records.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EventType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { isTerminal, legalTransitions, transitionEvent } from "../../src/model/transitions.js";
import { backoffMs, effectiveRetryPolicy } from "../../src/lifecycle/retry.js";

const { QUEUED, RUNNING, RETRYING, CANCELLED, FAILED, COMPLETED } = TaskState;
const states = [QUEUED, RUNNING, RETRYING, CANCELLED, FAILED, COMPLETED];

const expected: [TaskState, TaskState, EventType][] = [
  [QUEUED, RUNNING, EventType.START],
  [QUEUED, CANCELLED, EventType.CANCEL],
  [RUNNING, COMPLETED, EventType.COMPLETE],
  [RUNNING, RETRYING, EventType.RETRY],
  [RUNNING, FAILED, EventType.FAILURE],
  [RUNNING, CANCELLED, EventType.CANCEL],
  [RETRYING, RUNNING, EventType.START],
  [RETRYING, CANCELLED, EventType.CANCEL],
];

describe("task lifecycle", () => {
  it("allows exactly the transitions of the contract", () => {
    expect(legalTransitions()).toEqual(expect.arrayContaining(expected));
    expect(legalTransitions()).toHaveLength(expected.length);
  });

  it.each(states.flatMap((from) => states.map((to) => [TaskState[from], TaskState[to], from, to] as const)))("%s → %s", (_f, _t, from, to) => {
    const legal = expected.find(([f, t]) => f === from && t === to);
    expect(transitionEvent(from, to)).toBe(legal?.[2]);
  });

  it("never leaves a terminal state", () => {
    for (const from of states.filter(isTerminal)) {
      for (const to of states) expect(transitionEvent(from, to)).toBeUndefined();
    }
    expect(states.filter(isTerminal)).toEqual([CANCELLED, FAILED, COMPLETED]);
  });

  it("lets every non-terminal state be cancelled", () => {
    for (const from of states.filter((s) => !isTerminal(s))) expect(transitionEvent(from, CANCELLED)).toBe(EventType.CANCEL);
  });
});

describe("retry backoff", () => {
  it("grows exponentially within [step/2, step] and never exceeds the cap", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10_000 }),
        fc.integer({ min: 1, max: 600_000 }),
        fc.integer({ min: 2, max: 40 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        (initial, cap, attempt, random) => {
          const policy = { maxAttempts: 50, initialBackoffMs: initial, maxBackoffMs: cap };
          const step = Math.min(cap, initial * 2 ** (attempt - 2));
          const delay = backoffMs(policy, attempt, () => random);
          expect(delay).toBeGreaterThanOrEqual(Math.floor(step / 2));
          expect(delay).toBeLessThanOrEqual(Math.ceil(step));
        },
      ),
    );
  });

  it("defaults to one attempt, 1 s initial and 60 s maximum backoff", () => {
    expect(effectiveRetryPolicy(undefined)).toEqual({ maxAttempts: 1, initialBackoffMs: 1000, maxBackoffMs: 60_000 });
  });
});
