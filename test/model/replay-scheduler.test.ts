// The replay scheduler: a bounded number of pages in flight, turns round-robin between replays,
// other work of the event loop between any two pages, and a replay that leaves while waiting
// never runs its page. Orderings only, never durations.
import { setImmediate as nextTurn } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { ReplayScheduler } from "../../src/model/replay-scheduler.js";

const never = new AbortController().signal;

/** A promise and its resolve function. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe("ReplayScheduler", () => {
  it("runs at most its bound of pages at once", async () => {
    const scheduler = new ReplayScheduler(3);
    let running = 0;
    let most = 0;
    const gates = Array.from({ length: 10 }, deferred);
    const pages = gates.map((gate) =>
      scheduler.run(async () => {
        running += 1;
        most = Math.max(most, running);
        await gate.promise;
        running -= 1;
      }, never),
    );
    for (let turn = 0; turn < 20; turn += 1) await nextTurn();
    expect(running).toBe(3);
    for (const gate of gates) gate.resolve();
    await Promise.all(pages);
    expect(most).toBe(3);
  });

  it("gives replays their turns round-robin, one page each, whatever order they asked in", async () => {
    const scheduler = new ReplayScheduler(1);
    const order: string[] = [];
    const replay = async (name: string, pages: number) => {
      for (let page = 0; page < pages; page += 1) await scheduler.run(async () => order.push(name), never);
    };
    await Promise.all([replay("a", 4), replay("b", 2), replay("c", 3)]);
    expect(order).toEqual(["a", "b", "c", "a", "b", "c", "a", "c", "a"]);
  });

  it("lets the rest of the event loop run between any two pages, however many replays wait", async () => {
    const scheduler = new ReplayScheduler(4);
    const order: string[] = [];
    const replays = Array.from({ length: 100 }, async (_, replay) => {
      for (let page = 0; page < 5; page += 1) await scheduler.run(async () => order.push(`page ${replay}.${page}`), never);
    });
    // Work that arrives while the storm runs (as a health check's I/O would): one turn later.
    await nextTurn();
    order.push("other work");
    await Promise.all(replays);
    const other = order.indexOf("other work");
    expect(other).toBeGreaterThanOrEqual(0);
    expect(other).toBeLessThan(3);
  });

  it("never runs the page of a replay that left while waiting for its turn", async () => {
    const scheduler = new ReplayScheduler(1);
    const gate = deferred();
    const first = scheduler.run(() => gate.promise, never);
    const leaving = new AbortController();
    let ran = false;
    const second = scheduler.run(async () => {
      ran = true;
    }, leaving.signal);
    leaving.abort();
    expect(await second).toBeUndefined();
    gate.resolve();
    await first;
    expect(await scheduler.run(async () => "next", never)).toBe("next");
    expect(ran).toBe(false);
  });
});
