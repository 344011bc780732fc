// The scheduler without sockets or a store: executions wait in arrival order for one of the
// server's slots and for room under their agentConcurrency caps; a cap that is full passes its
// executions over, a cap still being looked up holds back everything after it.
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { ExecutionQueue, type Queued } from "../../src/lifecycle/execution-queue.js";
import { createLogger } from "../../src/api/logger.js";
import type { SlotKey } from "../../src/store/store.js";

const silent = createLogger("error", new Writable({ write: (_chunk, _encoding, done) => done() }));

/** A queue whose cap lookups the test answers, and which records what it starts. */
function scheduler(maxConcurrent: number, caps: Record<string, SlotKey[] | Error> = {}) {
  const started: string[] = [];
  const finish = new Map<string, () => void>();
  const lookups = new Map<string, (keys: SlotKey[]) => void>();
  const queue = new ExecutionQueue({
    maxConcurrent,
    log: silent,
    // A name in `caps` answers at once; any other waits until the test calls answer(name, keys).
    slotKeysOf: ({ name }) => {
      const known = caps[name];
      if (known instanceof Error) return Promise.reject(known);
      if (known !== undefined) return Promise.resolve(known);
      return new Promise((resolve) => lookups.set(name, resolve));
    },
    start: (name, done) => {
      started.push(name);
      finish.set(name, done);
    },
  });
  const wait = (name: string, front = false) => queue.wait({ name, delegation: "delegations/d", profile: "profiles/p" } satisfies Queued, front);
  return {
    queue,
    started,
    wait,
    /** Ends a started execution, which frees its slot. */
    finish: (name: string) => finish.get(name)!(),
    answer: (name: string, keys: SlotKey[]) => lookups.get(name)!(keys),
  };
}

/** Lets the cap lookups' promise callbacks run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

const cap = (key: string, n: bigint): SlotKey => ({ key, cap: n });

describe("ExecutionQueue", () => {
  it("starts executions in arrival order up to maxConcurrent, and the next one when a slot frees", async () => {
    const s = scheduler(2, { a: [], b: [], c: [] });
    s.wait("a");
    s.wait("b");
    s.wait("c");
    await settle();
    expect(s.started).toEqual(["a", "b"]);
    expect(s.queue.counts()).toEqual({ running: 2, queued: 1 });
    s.finish("b");
    expect(s.started).toEqual(["a", "b", "c"]);
    expect(s.queue.counts()).toEqual({ running: 2, queued: 0 });
  });

  it("passes over an execution whose cap is full, starts later ones under other caps, and starts it when its cap frees", async () => {
    const d1 = cap("delegations/one", 1n);
    const s = scheduler(10, { a: [d1], b: [d1], c: [cap("delegations/two", 1n)] });
    s.wait("a");
    s.wait("b");
    s.wait("c");
    await settle();
    expect(s.started).toEqual(["a", "c"]);
    expect(s.queue.has("b")).toBe(true);
    s.finish("c"); // frees another cap: b still waits
    expect(s.started).toEqual(["a", "c"]);
    s.finish("a");
    expect(s.started).toEqual(["a", "c", "b"]);
  });

  it("serves each cap first come, first served", async () => {
    const shared = cap("profiles/p", 1n);
    const s = scheduler(10, { a: [shared], b: [shared], c: [shared] });
    for (const name of ["a", "b", "c"]) s.wait(name);
    await settle();
    s.finish("a");
    s.finish("b");
    expect(s.started).toEqual(["a", "b", "c"]);
  });

  it("holds back everything after an execution whose caps are still being looked up", async () => {
    const s = scheduler(10, { b: [] });
    s.wait("a"); // its lookup is answered below
    s.wait("b");
    await settle();
    expect(s.started).toEqual([]);
    s.answer("a", []);
    await settle();
    expect(s.started).toEqual(["a", "b"]);
  });

  it("puts an execution queued at the front ahead of those already waiting", async () => {
    const s = scheduler(1, { a: [], b: [], c: [] });
    s.wait("a");
    await settle();
    s.wait("b");
    s.wait("c", true);
    await settle();
    s.finish("a");
    expect(s.started).toEqual(["a", "c"]);
  });

  it("runs an execution whose caps cannot be looked up under the server's limit only", async () => {
    const s = scheduler(1, { a: new Error("store down"), b: [] });
    s.wait("a");
    s.wait("b");
    await settle();
    expect(s.started).toEqual(["a"]);
    s.finish("a");
    expect(s.started).toEqual(["a", "b"]);
  });

  it("never starts an execution taken out of the queue", async () => {
    const s = scheduler(1, { a: [], b: [], c: [] });
    for (const name of ["a", "b", "c"]) s.wait(name);
    await settle();
    s.queue.remove("b");
    expect(s.queue.has("b")).toBe(false);
    s.finish("a");
    expect(s.started).toEqual(["a", "c"]);
  });

  it("starts nothing and queues nothing once stopped", async () => {
    const s = scheduler(1, { a: [], b: [], c: [] });
    s.wait("a");
    s.wait("b");
    await settle();
    s.queue.stop();
    s.wait("c");
    s.finish("a");
    expect(s.started).toEqual(["a"]);
    expect(s.queue.has("c")).toBe(false);
  });
});
