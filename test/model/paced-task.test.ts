// A paced task runs in a later turn when asked, once however often it was asked meanwhile, and
// after each run rests for `pace` times as long as the run took — unless asked urgently.
import { describe, expect, it } from "vitest";
import { PacedTask } from "../../src/model/paced-task.js";

const nextTurn = () => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Holds the event loop for `ms`, as a run that takes that long does. */
function busyFor(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

describe("PacedTask", () => {
  it("runs in a later turn, once for every request made before it runs", async () => {
    let runs = 0;
    const task = new PacedTask(() => runs++, 2);
    task.request(false);
    task.request(false);
    task.request(true);
    expect(runs).toBe(0);
    await nextTurn();
    expect(runs).toBe(1);
    await sleep(20);
    expect(runs).toBe(1);
  });

  it("after a run rests for pace times its length, and a request made meanwhile runs once the rest is over", async () => {
    const started: number[] = [];
    // The first run takes 150 ms, so the task rests for 300 ms after it.
    const task = new PacedTask(() => {
      started.push(performance.now());
      if (started.length === 1) busyFor(150);
    }, 2);
    task.request(false);
    await nextTurn();
    const firstEnded = performance.now();
    task.request(false);
    task.request(false);
    await nextTurn();
    expect(started).toHaveLength(1);
    await sleep(500);
    expect(started).toHaveLength(2);
    // Not before the rest was over (timers may fire a little early, never by a whole millisecond).
    expect(started[1]! - firstEnded).toBeGreaterThanOrEqual(299);
  });

  it("an urgent request does not wait for the rest", async () => {
    let runs = 0;
    const task = new PacedTask(() => {
      runs++;
      if (runs === 1) busyFor(150);
    }, 2);
    task.request(false);
    await nextTurn();
    task.request(false);
    await nextTurn();
    expect(runs).toBe(1);
    task.request(true);
    await nextTurn();
    expect(runs).toBe(2);
  });
});
