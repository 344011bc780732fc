// Waits share one deadline heap and one timer: each wait still ends at its own deadline, in
// deadline order whatever order they began in, or earlier when woken or aborted; an ended wait
// is no longer filed anywhere.
import { describe, expect, it } from "vitest";
import { sleepingWaits, type Waiter, waitForWakeUp, wakeAll } from "../../src/model/wake-up.js";

describe("waitForWakeUp", () => {
  it("ends each wait at its own deadline, in deadline order, with one shared timer", async () => {
    const before = sleepingWaits();
    const ended: number[] = [];
    const never = new AbortController().signal;
    const deadlines = [60, 10, 40, 20, 50, 30];
    await Promise.all(deadlines.map((ms) => waitForWakeUp(new Set(), ms, never).then(() => ended.push(ms))));
    expect(ended).toEqual([...deadlines].sort((a, b) => a - b));
    expect(sleepingWaits()).toBe(before);
  });

  it("a woken or aborted wait ends at once and leaves its set, the heap and its signal", async () => {
    const before = sleepingWaits();
    const waiters = new Set<Waiter>();
    const woken = waitForWakeUp(waiters, 60_000, new AbortController().signal);
    const controller = new AbortController();
    const aborted = waitForWakeUp(new Set(), 60_000, controller.signal);
    const later = waitForWakeUp(new Set(), 20, new AbortController().signal);
    expect(sleepingWaits()).toBe(before + 3);
    wakeAll(waiters);
    await woken;
    expect(waiters.size).toBe(0);
    controller.abort();
    await aborted;
    expect(sleepingWaits()).toBe(before + 1);
    // The heap still ends the one left after the earlier ones were taken out.
    await later;
    expect(sleepingWaits()).toBe(before);
    // An aborted signal ends a wait at once.
    await waitForWakeUp(new Set(), 60_000, controller.signal);
    expect(sleepingWaits()).toBe(before);
  });
});
