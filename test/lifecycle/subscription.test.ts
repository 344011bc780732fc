// A subscription over a real SQLite store: history read in filtered pages from the store, then the
// hub's window and live events, as one stream — ordered, exactly the filter's share, no gap or
// repeat at the seam however the window, the pages and the concurrent appends fall, resumable
// from any event it sent; a replay the window holds reads nothing of the store; compaction that
// overtakes a replay is OutOfRange. With a DirectDelivery, live events the hub writes straight to
// the stream and those the subscription yields make up that same stream, in order, whenever the
// stream stops and starts taking writes.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { EventFilterSchema, type EventFilter } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { EventType, OperationType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { eventSelection, matchesEventFilter } from "../../src/lifecycle/event-filter.js";
import { EventHub } from "../../src/lifecycle/event-hub.js";
import { HistoryReader, type PageBounds } from "../../src/lifecycle/history-replay.js";
import { ReplayScheduler } from "../../src/model/replay-scheduler.js";
import { RetentionFloor } from "../../src/lifecycle/retention-floor.js";
import { subscribe, type DirectDelivery, type EventSources, type SubscriptionItem } from "../../src/lifecycle/subscription.js";
import { sleepingWaits } from "../../src/model/wake-up.js";
import { SqliteStore } from "../../src/store/sqlite/sqlite-store.js";
import type { OperationStore, StoredEvent } from "../../src/store/store.js";
import { tempDir } from "../helpers/temp-dir.js";
import { asRead, EVENT_STEPS, event, operation, SCOPE } from "../store/conformance.js";

const PROFILES = ["profiles/sub-a", "profiles/sub-b", "profiles/sub-c"];
const OP_TYPES = [OperationType.TOOL_GRANT_APPLY, OperationType.PROFILE_CREATE];

const opened: OperationStore[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((store) => store.close()));
});

/** Store reads a replay could make, counted. */
const READS = ["readEvents", "readEventPage", "eventBounds"] as const;

/** `store` with its event reads counted in `reads.count`. */
function counted(store: OperationStore): { store: OperationStore; reads: { count: number } } {
  const reads = { count: 0 };
  const wrapped = new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown;
      if (typeof value !== "function") return value;
      if ((READS as readonly (string | symbol)[]).includes(property)) {
        return (...args: unknown[]) => {
          reads.count += 1;
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  });
  return { store: wrapped, reads };
}

async function sourcesOver(store: OperationStore, windowSize: number, pages: PageBounds = { pageEvents: 512, pageSpan: 8192 }): Promise<EventSources> {
  const replays = new ReplayScheduler(2);
  return {
    hub: await EventHub.open(store, windowSize),
    history: new HistoryReader(store, replays, pages),
    replays,
    retention: await RetentionFloor.open(store),
    store,
  };
}

function openStore(): OperationStore {
  const store = new SqliteStore(tempDir("amctl-subscription-"));
  opened.push(store);
  return store;
}

/** Appends `count` operations' events, spread over the profiles, types and steps. */
async function append(store: OperationStore, count: number, from = 0): Promise<void> {
  for (let i = from; i < from + count; i += 1) {
    const op = operation({ profile: PROFILES[i % PROFILES.length]!, type: OP_TYPES[i % OP_TYPES.length]! });
    const [type, state] = EVENT_STEPS[i % EVENT_STEPS.length]!;
    await store.createOperation({ idempotencyScope: SCOPE, operation: op, requestDigest: "d", event: event(op.name, type, state) });
  }
}

interface Watch {
  after: bigint;
  filter: EventFilter;
  /** The caller's visible profiles; undefined for every profile. */
  visible?: readonly string[];
  /** Shared by watches with the same filter and visible profiles (the hub matches once for all). */
  key?: string;
}

const visibleTo = (watch: Watch) => (stored: StoredEvent) => (watch.visible?.includes(stored.profile) ?? true) && matchesEventFilter(watch.filter, stored);

/**
 * The events a subscription sends until it has considered `until` (told by an event or a
 * bookmark at or beyond it), or `take` events; then it stops.
 */
async function watch(sources: EventSources, spec: Watch, until: () => bigint, take = Number.POSITIVE_INFINITY): Promise<StoredEvent[]> {
  const controller = new AbortController();
  const sent: StoredEvent[] = [];
  try {
    for await (const item of subscribe(sources, {
      after: spec.after,
      selection: eventSelection(spec.filter, spec.visible),
      matches: visibleTo(spec),
      signal: controller.signal,
      bookmarkIntervalMs: 1,
      ...(spec.key !== undefined ? { filterKey: spec.key } : {}),
    })) {
      const considered = item.kind === "event" ? item.stored.event.sequence : item.sequence;
      // As plain values: an event a replay read from the store decodes on demand (RowEvent).
      if (item.kind === "event") sent.push(...asRead([item.stored]));
      if (sent.length >= take || considered >= until()) break;
    }
  } finally {
    controller.abort();
  }
  return sent;
}

const filters = fc.record({
  profile: fc.constantFrom("", ...PROFILES),
  types: fc.subarray([EventType.START, EventType.PROGRESS, EventType.COMPLETE]),
  states: fc.subarray([TaskState.QUEUED, TaskState.RUNNING, TaskState.COMPLETED]),
  operationTypes: fc.subarray(OP_TYPES),
});

describe("subscription: history, then window and live tail", () => {
  it("sends exactly the filter's share of every event after the cursor, in order, across the seam, while events keep coming", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          before: fc.integer({ min: 0, max: 120 }),
          during: fc.integer({ min: 0, max: 60 }),
          window: fc.integer({ min: 1, max: 40 }),
          pageEvents: fc.integer({ min: 1, max: 9 }),
          pageSpan: fc.integer({ min: 1, max: 30 }),
          from: fc.double({ min: 0, max: 1, noNaN: true }),
          filter: filters,
          visible: fc.option(fc.subarray(PROFILES), { nil: undefined }),
          /** Whether the live commits wait until the subscription sleeps on the tail, or race its catching up. */
          settled: fc.boolean(),
        }),
        async (run) => {
          const store = openStore();
          await append(store, run.before);
          const sources = await sourcesOver(store, run.window, { pageEvents: run.pageEvents, pageSpan: run.pageSpan });
          const spec: Watch = { after: BigInt(Math.floor(run.from * run.before)), filter: create(EventFilterSchema, run.filter), visible: run.visible };
          const target = BigInt(run.before + run.during);
          const watching = watch(sources, spec, () => target);
          await append(store, run.during, run.before);
          const sent = await watching;
          const all = await store.readEvents(0n, 100_000);
          expect(sent.map((stored) => stored.event.sequence)).toEqual(
            all.filter((stored) => stored.event.sequence > spec.after && visibleTo(spec)(stored)).map((stored) => stored.event.sequence),
          );
          expect(sent).toEqual(sent.map((stored) => all[Number(stored.event.sequence) - 1]));
        },
      ),
      { numRuns: 40 },
    );
  });

  it("subscriptions sharing one filter key, started at different cursors and times, each send exactly their share", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          before: fc.integer({ min: 0, max: 60 }),
          /** For each subscription: where its cursor is (a share of `before`), and after how many live commits it starts. */
          starts: fc.array(fc.record({ from: fc.double({ min: 0, max: 1, noNaN: true }), afterCommits: fc.integer({ min: 0, max: 30 }) }), {
            minLength: 2,
            maxLength: 5,
          }),
          during: fc.integer({ min: 1, max: 40 }),
          window: fc.integer({ min: 1, max: 40 }),
          filter: filters,
          visible: fc.option(fc.subarray(PROFILES), { nil: undefined }),
        }),
        async (run) => {
          const store = openStore();
          await append(store, run.before);
          const sources = await sourcesOver(store, run.window);
          const target = BigInt(run.before + run.during);
          const filter = create(EventFilterSchema, run.filter);
          const specs: Watch[] = run.starts.map(({ from }) => ({ after: BigInt(Math.floor(from * run.before)), filter, visible: run.visible, key: "shared" }));
          const watching: Promise<StoredEvent[]>[] = [];
          for (let i = 0; i < run.during; i += 1) {
            run.starts.forEach(({ afterCommits }, index) => {
              if (afterCommits === i) watching[index] = watch(sources, specs[index]!, () => target);
            });
            await append(store, 1, run.before + i);
            await new Promise((resolve) => setImmediate(resolve));
          }
          run.starts.forEach((_, index) => {
            watching[index] ??= watch(sources, specs[index]!, () => target);
          });
          const all = await store.readEvents(0n, 100_000);
          const sent = await Promise.all(watching);
          sent.forEach((events, index) => {
            const spec = specs[index]!;
            expect(events.map((stored) => stored.event.sequence)).toEqual(
              all.filter((stored) => stored.event.sequence > spec.after && visibleTo(spec)(stored)).map((stored) => stored.event.sequence),
            );
          });
        },
      ),
      { numRuns: 40 },
    );
  });

  it("resumes after the last event it sent, anywhere in the history or the window, with nothing lost or repeated", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 1, max: 20 }), filters, async (cut, window, filter) => {
        const store = openStore();
        await append(store, 90);
        const sources = await sourcesOver(store, window, { pageEvents: 4, pageSpan: 10 });
        const spec: Watch = { after: 0n, filter: create(EventFilterSchema, filter) };
        const first = await watch(sources, spec, () => 90n, cut);
        const resumed = await watch(sources, { ...spec, after: first.at(-1)?.event.sequence ?? 90n }, () => 90n);
        const whole = await watch(sources, spec, () => 90n);
        expect([...first, ...resumed]).toEqual(whole);
      }),
      { numRuns: 25 },
    );
  });

  it("serves a replay the window holds without reading the store, and reads the store for one it does not", async () => {
    const { store, reads } = counted(openStore());
    // The hubs see the events committed after they open, as a server's hub does.
    const small = await sourcesOver(store, 16);
    const large = await sourcesOver(store, 64);
    await append(store, 50);
    const spec = (after: bigint): Watch => ({ after, filter: create(EventFilterSchema, { profile: PROFILES[1] }) });
    const all = await store.readEvents(0n, 100);
    const expected = (after: bigint) => all.filter((stored) => stored.event.sequence > after && visibleTo(spec(after))(stored));

    reads.count = 0;
    expect(await watch(large, spec(0n), () => 50n)).toEqual(expected(0n));
    expect(await watch(large, spec(20n), () => 50n)).toEqual(expected(20n));
    expect(reads.count).toBe(0);

    expect(await watch(small, spec(0n), () => 50n)).toEqual(expected(0n));
    expect(reads.count).toBeGreaterThan(0);
  });

  it("ends a replay that compaction overtook with OutOfRange naming the oldest retained sequence", async () => {
    const store = openStore();
    await append(store, 60);
    const sources = await sourcesOver(store, 5, { pageEvents: 5, pageSpan: 5 });
    const items = subscribe(sources, { after: 0n, selection: {}, matches: () => true, signal: new AbortController().signal, bookmarkIntervalMs: 0 });
    expect((await items.next()).value).toMatchObject({ kind: "event", stored: { event: { sequence: 1n } } });
    await store.compactEvents({ maxEvents: 20, maxAgeMs: 3_600_000 }, new Date());
    const error = await (async () => {
      for await (const _ of items);
    })().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.OutOfRange);
    expect((error as ConnectError).rawMessage).toContain("oldest available is 41");
  });

  it("with a direct stream, the hub writes live events to it and the subscription yields the rest: one stream, in order, bookmarks never behind", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          before: fc.integer({ min: 0, max: 30 }),
          during: fc.integer({ min: 1, max: 40 }),
          /** After each direct write, whether the stream still takes writes at once. */
          takes: fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }),
          filter: filters,
          visible: fc.option(fc.subarray(PROFILES), { nil: undefined }),
          /** Whether the live commits wait until the subscription sleeps on the tail, or race its catching up. */
          settled: fc.boolean(),
        }),
        async (run) => {
          const store = openStore();
          await append(store, run.before);
          const sources = await sourcesOver(store, 16);
          const spec: Watch = { after: 0n, filter: create(EventFilterSchema, run.filter), visible: run.visible };
          /** What went out on the stream, in order: events (written or yielded) and bookmarks. */
          const wire: { kind: "event" | "bookmark"; sequence: bigint }[] = [];
          let writable = true;
          let writes = 0;
          // The subscription asks whether the stream takes writes just before it hands the hub its writer.
          let armed: () => void = () => {};
          const firstAsked = new Promise<void>((resolve) => {
            armed = resolve;
          });
          const direct: DirectDelivery = {
            deliver(events) {
              for (const stored of events) wire.push({ kind: "event", sequence: stored.event.sequence });
              writable = run.takes[writes++ % run.takes.length]!;
              return true;
            },
            writable: () => {
              armed();
              return writable;
            },
            ready: () => new Promise((resolve) => setTimeout(() => resolve(void (writable = true)), 1)),
          };
          const controller = new AbortController();
          const target = BigInt(run.before + run.during);
          const considered = () => wire.at(-1)?.sequence ?? 0n;
          const watching = (async () => {
            const items = subscribe(sources, {
              after: spec.after,
              selection: eventSelection(spec.filter, spec.visible),
              matches: visibleTo(spec),
              signal: controller.signal,
              bookmarkIntervalMs: 2,
              direct,
            });
            for await (const item of items) {
              wire.push(item.kind === "event" ? { kind: "event", sequence: item.stored.event.sequence } : { kind: "bookmark", sequence: item.sequence });
              if (considered() >= target) break;
            }
          })();
          if (run.settled) await firstAsked;
          // Live: one commit at a time, the subscription following.
          for (let i = run.before; i < run.before + run.during; i += 1) {
            await append(store, 1, i);
            await new Promise((resolve) => setImmediate(resolve));
          }
          await Promise.race([watching, new Promise((resolve) => setTimeout(resolve, 2000))]);
          controller.abort();
          await watching;
          const all = await store.readEvents(0n, 100_000);
          const expected = all.filter((stored) => visibleTo(spec)(stored)).map((stored) => stored.event.sequence);
          const events = wire.filter((item) => item.kind === "event").map((item) => item.sequence);
          expect(events).toEqual(expected.filter((sequence) => sequence <= considered()));
          // Every matching event up to the last one considered went out: nothing lost at the end either.
          expect(considered()).toBeGreaterThanOrEqual(expected.at(-1) ?? 0n);
          for (let i = 1; i < wire.length; i += 1) expect(wire[i]!.sequence).toBeGreaterThanOrEqual(wire[i - 1]!.sequence);
          // Once the subscription sleeps on the tail, a live event it matches is written by the hub.
          if (run.settled && expected.some((sequence) => sequence > BigInt(run.before)) && run.takes.every(Boolean)) {
            expect(writes).toBeGreaterThan(0);
          }
        },
      ),
      { numRuns: 30 },
    );
  });

  it("with a direct stream, ends at its last event, and writes nothing once its call is over", async () => {
    const store = openStore();
    const sources = await sourcesOver(store, 16);
    const written: bigint[] = [];
    let directly = 0;
    const direct: DirectDelivery = {
      deliver(events) {
        written.push(...events.map((stored) => stored.event.sequence));
        directly += events.length;
        return true;
      },
      writable: () => true,
      ready: () => Promise.resolve(),
    };
    const last = subscribe(sources, {
      after: 0n,
      selection: {},
      matches: () => true,
      signal: new AbortController().signal,
      bookmarkIntervalMs: 0,
      direct,
      isLast: (stored) => stored.event.sequence === 3n,
    });
    const ended = (async () => {
      for await (const item of last) if (item.kind === "event") written.push(item.stored.event.sequence);
    })();
    // The three events in one commit each, then more that must not go out.
    await new Promise((resolve) => setTimeout(resolve, 20));
    await append(store, 5);
    await ended;
    expect(written).toEqual([1n, 2n, 3n]);
    expect(directly).toBe(3);

    const controller = new AbortController();
    const after = subscribe(sources, { after: 5n, selection: {}, matches: () => true, signal: controller.signal, bookmarkIntervalMs: 0, direct });
    written.length = 0;
    const following = after.next();
    await new Promise((resolve) => setTimeout(resolve, 20));
    controller.abort();
    await append(store, 2, 5);
    expect(await following).toMatchObject({ done: true });
    expect(written).toEqual([]);
  });

  it("with a direct stream that takes writes at once, a replay goes out one write per page, and one yield per event when it does not", async () => {
    const store = openStore();
    await append(store, 1500);
    const sources = await sourcesOver(store, 16);
    const replay = async (writable: boolean) => {
      const writes: bigint[][] = [];
      const yielded: bigint[] = [];
      const direct: DirectDelivery = {
        deliver(events) {
          writes.push(events.map((stored) => stored.event.sequence));
          return true;
        },
        writable: () => writable,
        ready: () => Promise.resolve(),
      };
      const items = subscribe(sources, {
        after: 0n,
        selection: {},
        // Every other event, so that a page's write is of the matching ones only.
        matches: (stored) => stored.event.sequence % 2n === 0n,
        signal: new AbortController().signal,
        bookmarkIntervalMs: 0,
        direct,
        isLast: (stored) => stored.event.sequence === 1500n,
      });
      for await (const item of items) if (item.kind === "event") yielded.push(item.stored.event.sequence);
      return { writes, yielded };
    };
    const evens = Array.from({ length: 750 }, (_, i) => BigInt(2 * (i + 1)));

    const direct = await replay(true);
    expect(direct.yielded).toEqual([]);
    expect(direct.writes.flat()).toEqual(evens);
    // Three pages of history (512 events each at most) and the window's last events.
    expect(direct.writes.length).toBeLessThanOrEqual(4);

    const backedUp = await replay(false);
    expect(backedUp.writes).toEqual([]);
    expect(backedUp.yielded).toEqual(evens);
  });

  it("many sleeping subscriptions each get their bookmarks written directly, at the newest sequence; cancelled, they leave nothing behind", async () => {
    const store = openStore();
    const sources = await sourcesOver(store, 16);
    await append(store, 3);
    const before = sleepingWaits();
    const subscribers = Array.from({ length: 40 }, () => {
      const state = { direct: [] as bigint[], yielded: [] as SubscriptionItem[], offered: 0 };
      const controller = new AbortController();
      const direct: DirectDelivery = {
        deliver: () => true,
        writable: () => true,
        ready: () => Promise.resolve(),
        bookmark(sequence) {
          state.direct.push(sequence);
          return true;
        },
      };
      const ended = (async () => {
        for await (const item of subscribe(sources, {
          after: 3n,
          selection: {},
          matches: () => {
            state.offered += 1;
            return true;
          },
          signal: controller.signal,
          bookmarkIntervalMs: 20,
          direct,
        }))
          state.yielded.push(item);
      })();
      return { state, controller, ended };
    });
    await until(() => subscribers.every(({ state }) => state.direct.length >= 2));
    for (const { state } of subscribers) {
      expect(state.yielded).toEqual([]);
      expect(new Set(state.direct)).toEqual(new Set([3n]));
    }
    expect(sleepingWaits()).toBe(before + subscribers.length);

    for (const { controller } of subscribers) controller.abort();
    await Promise.all(subscribers.map(({ ended }) => ended));
    expect(sleepingWaits()).toBe(before);
    // No longer filed in the hub: a commit is offered to none of them.
    const offered = subscribers.map(({ state }) => state.offered);
    await append(store, 2, 3);
    expect(subscribers.map(({ state }) => state.offered)).toEqual(offered);
  });

  it("yields its bookmark when its direct stream takes no write at once, or refuses it", async () => {
    const store = openStore();
    const sources = await sourcesOver(store, 16);
    await append(store, 2);
    for (const [writable, takes] of [
      [false, true],
      [true, false],
    ] as const) {
      const direct: DirectDelivery & { tried: number } = {
        tried: 0,
        deliver: () => true,
        writable: () => writable,
        ready: () => Promise.resolve(),
        bookmark() {
          direct.tried += 1;
          return takes;
        },
      };
      const controller = new AbortController();
      const items = subscribe(sources, { after: 2n, selection: {}, matches: () => true, signal: controller.signal, bookmarkIntervalMs: 10, direct });
      expect((await items.next()).value).toEqual({ kind: "bookmark", sequence: 2n });
      expect(direct.tried).toBe(writable ? 1 : 0);
      controller.abort();
      await items.return(undefined);
    }
  });
});

/** Resolves once `done()` holds, checking every few milliseconds. */
async function until(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((resolve) => setTimeout(resolve, 5));
}
