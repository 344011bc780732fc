// The EventHub's live fan-out: subscribers filed under an index key are offered only the events
// with that key, matching is exact, and a live subscriber that falls behind its bounded buffer
// reads on by cursor without a gap or a repeat. The hub's contract with the store is small
// (readEvents, readEventPage, eventBounds, onCommit), so an in-memory log stands in for it here; the same
// paths run over real sockets and a real store in test/e2e/event-streams.test.ts.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { OperationEventSchema } from "../../src/gen/agentmachine/v1/event_pb.js";
import { EventFilterSchema } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { EventType, OperationType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { EventHub } from "../../src/lifecycle/event-hub.js";
import { type CompiledFilter, eventFilterIndex, matchesEventFilter } from "../../src/lifecycle/event-filter.js";
import type { EventFilter } from "../../src/gen/agentmachine/v1/operation_service_pb.js";

/** A WatchEvents subscriber's filter as the operation service makes it. */
function compiled(filter: EventFilter | undefined, visibleProfiles: readonly string[] | undefined): CompiledFilter {
  const canSee = (profile: string) => visibleProfiles === undefined || visibleProfiles.includes(profile);
  return { index: eventFilterIndex(filter, visibleProfiles), matches: (stored) => canSee(stored.profile) && matchesEventFilter(filter, stored) };
}
import { HistoryReader } from "../../src/lifecycle/history-replay.js";
import { RetentionFloor } from "../../src/lifecycle/retention-floor.js";
import { subscribe, type EventSources, type SubscriptionItem } from "../../src/lifecycle/subscription.js";
import { ReplayScheduler } from "../../src/model/replay-scheduler.js";
import type { EventBounds, EventPage, EventPageQuery, StoreEvents, StoredEvent } from "../../src/store/store.js";

class MemoryLog implements StoreEvents {
  events: StoredEvent[] = [];
  private listeners: ((events: StoredEvent[]) => void)[] = [];
  async readEvents(after: bigint, limit: number): Promise<StoredEvent[]> {
    return this.events.filter((stored) => stored.event.sequence > after).slice(0, limit);
  }
  /** History pages, unfiltered (the subscription's exact rule filters them). */
  async readEventPage({ after, through, limit }: EventPageQuery): Promise<EventPage> {
    const events = this.events.filter(({ event }) => event.sequence > after && event.sequence <= through).slice(0, limit);
    return { events, oldest: this.events[0]?.event.sequence ?? 1n };
  }
  async eventBounds(): Promise<EventBounds> {
    return { oldest: this.events[0]?.event.sequence ?? 1n, latest: BigInt(this.events.length) };
  }
  async compactEvents(): Promise<number> {
    return 0;
  }
  onCommit(listener: (events: StoredEvent[]) => void): void {
    this.listeners.push(listener);
  }
  /** Commits one event per entry. */
  commit(...entries: { profile: string; operation: string; type?: OperationType }[]): void {
    const committed = entries.map(({ profile, operation, type }, index) => ({
      event: create(OperationEventSchema, {
        sequence: BigInt(this.events.length + index + 1),
        operation,
        type: EventType.START,
        state: TaskState.RUNNING,
      }),
      profile,
      operationType: type ?? OperationType.TOOL_GRANT_APPLY,
      labels: {},
    }));
    this.events.push(...committed);
    for (const listener of this.listeners) listener(committed);
  }
}

/** What a subscription reads over `log`, as the server makes it. */
async function sourcesOver(log: MemoryLog, hub: EventHub): Promise<EventSources> {
  const replays = new ReplayScheduler(2);
  return { hub, history: new HistoryReader(log, replays, { pageEvents: 512, pageSpan: 8192 }), replays, retention: await RetentionFloor.open(log), store: log };
}

/** A filter that counts the events it was asked about. */
function counted(filter: CompiledFilter): { filter: CompiledFilter; asked: () => number } {
  let asked = 0;
  return {
    filter: {
      index: filter.index,
      matches: (stored) => {
        asked++;
        return filter.matches(stored);
      },
    },
    asked: () => asked,
  };
}

/** Reads items until `count` events arrived (bookmarks are skipped). */
async function events(items: AsyncGenerator<SubscriptionItem>, count: number): Promise<bigint[]> {
  const sequences: bigint[] = [];
  while (sequences.length < count) {
    const { value, done } = await items.next();
    if (done) break;
    if (value.kind === "event") sequences.push(value.stored.event.sequence);
  }
  return sequences;
}

const profileA = "profiles/a";
const profileB = "profiles/b";

describe("EventHub live fan-out", () => {
  it("offers a live subscriber only the events of its index key", async () => {
    const log = new MemoryLog();
    const hub = await EventHub.open(log);
    const onA = counted(compiled(create(EventFilterSchema, { profile: profileA }), undefined));
    const tail = hub.follow(onA.filter);
    const others = Array.from({ length: 500 }, (_, i) => ({ profile: profileB, operation: `operations/b${i}` }));
    log.commit(...others, { profile: profileA, operation: "operations/a" });
    expect(onA.asked()).toBe(1);
    expect(tail.take().map((stored) => stored.event.operation)).toEqual(["operations/a"]);
    tail.close();
  });

  it("tests each event once for all the subscribers that share a filter key, and hands each its own share of it", async () => {
    const log = new MemoryLog();
    const hub = await EventHub.open(log);
    const onA = counted(compiled(create(EventFilterSchema, { profile: profileA }), undefined));
    const shared = { ...onA.filter, key: "profile a" };
    const early = hub.follow(shared);
    log.commit({ profile: profileA, operation: "operations/a1" }, { profile: profileB, operation: "operations/b" });
    // Followed after that commit: it read it from the window already, so it is not handed it.
    const late = hub.follow(shared);
    log.commit({ profile: profileA, operation: "operations/a2" });
    // One test per event, however many subscribers share the key.
    expect(onA.asked()).toBe(2);
    const operations = (tail: typeof early) => tail.take().map((stored) => stored.event.operation);
    expect(operations(early)).toEqual(["operations/a1", "operations/a2"]);
    expect(operations(late)).toEqual(["operations/a2"]);
    // What a tail took is not handed to it again at the next delivery; the other gets it then.
    await new Promise((resolve) => setImmediate(resolve));
    expect(operations(early)).toEqual([]);
    log.commit({ profile: profileA, operation: "operations/a3" });
    await new Promise((resolve) => setImmediate(resolve));
    expect(operations(early)).toEqual(["operations/a3"]);
    expect(operations(late)).toEqual(["operations/a3"]);
    early.close();
    late.close();
  });

  it("a caller that may see no profile is offered no live event at all", async () => {
    const log = new MemoryLog();
    const hub = await EventHub.open(log);
    const none = counted(compiled(undefined, []));
    hub.follow(none.filter);
    log.commit({ profile: profileA, operation: "operations/a" }, { profile: profileB, operation: "operations/b" });
    expect(none.asked()).toBe(0);
  });

  it("delivers exactly the matching events, in order, across the replay-to-live seam", async () => {
    const log = new MemoryLog();
    const hub = await EventHub.open(log);
    const entry = (i: number) => ({ profile: i % 3 === 0 ? profileA : profileB, operation: `operations/${i % 7}` });
    log.commit(...Array.from({ length: 40 }, (_, i) => entry(i)));
    const controller = new AbortController();
    const filter = compiled(create(EventFilterSchema, { profile: profileA, operations: ["operations/0", "operations/3"] }), undefined);
    const items = subscribe(await sourcesOver(log, hub), { after: 0n, selection: {}, ...filter, signal: controller.signal, bookmarkIntervalMs: 0 });
    const replayed = await events(items, 4);
    for (let i = 40; i < 120; i++) log.commit(entry(i));
    const expected = log.events.filter((stored) => filter.matches(stored)).map((stored) => stored.event.sequence);
    const live = await events(items, expected.length - replayed.length);
    expect([...replayed, ...live]).toEqual(expected);
    controller.abort();
    await items.return(undefined);
  });

  it("paces its writes: the commits made while a delivery rests go to each writer in one write, and a burst goes at once", async () => {
    const log = new MemoryLog();
    const hub = await EventHub.open(log);
    const writes: bigint[][] = [];
    const tails = [0, 1].map(() => hub.follow(compiled(undefined, undefined)));
    for (const tail of tails) {
      tail.writer = {
        writeLive(events) {
          writes.push(events.map((stored) => stored.event.sequence));
          // Deliveries of event 1 and 5 take 60 ms (30 for each writer): the hub rests 240 ms after each.
          if (events[0]!.event.sequence === 1n || events[0]!.event.sequence === 5n) {
            const until = performance.now() + 60 / tails.length;
            while (performance.now() < until);
          }
          return true;
        },
      };
    }
    const nextTurn = () => new Promise((resolve) => setImmediate(resolve));
    log.commit({ profile: profileA, operation: "operations/a" });
    // Delivered in a later turn, not as the commit lands.
    expect(writes).toEqual([]);
    await nextTurn();
    expect(writes).toEqual([[1n], [1n]]);
    // Three commits while the hub rests: matched at once, written together after the rest.
    for (let i = 0; i < 3; i++) log.commit({ profile: profileA, operation: "operations/a" });
    await nextTurn();
    expect(writes).toHaveLength(2);
    expect(writes).toHaveLength(2);
    await new Promise((resolve) => setTimeout(resolve, 450));
    expect(writes.slice(2)).toEqual([
      [2n, 3n, 4n],
      [2n, 3n, 4n],
    ]);
    // While it rests, a burst of 64 events or more is written in the next turn.
    log.commit({ profile: profileA, operation: "operations/a" });
    await nextTurn();
    expect(writes.slice(4)).toEqual([[5n], [5n]]);
    log.commit(...Array.from({ length: 64 }, () => ({ profile: profileA, operation: "operations/a" })));
    await nextTurn();
    expect(writes.slice(6).map((write) => write.length)).toEqual([64, 64]);
    for (const tail of tails) tail.close();
  });

  it("a live subscriber that overflows its buffer reads on by cursor with no gap or repeat", async () => {
    const log = new MemoryLog();
    const hub = await EventHub.open(log);
    const controller = new AbortController();
    const items = subscribe(await sourcesOver(log, hub), {
      after: 0n,
      selection: {},
      matches: (stored) => stored.event.operation === "operations/x",
      index: { by: "operation", values: ["operations/x"] },
      signal: controller.signal,
      bookmarkIntervalMs: 0,
    });
    log.commit({ profile: profileA, operation: "operations/x" });
    expect(await events(items, 1)).toEqual([1n]);
    // Now following live; it does not read while far more than a buffer's worth commits.
    log.commit(...Array.from({ length: 3000 }, () => ({ profile: profileA, operation: "operations/x" })));
    expect(await events(items, 3000)).toEqual(Array.from({ length: 3000 }, (_, i) => BigInt(i + 2)));
    controller.abort();
    await items.return(undefined);
  });

  it("files WatchEvents filters under their most selective key", () => {
    const filter = (init: Parameters<typeof create<typeof EventFilterSchema>>[1]) => create(EventFilterSchema, init);
    expect(eventFilterIndex(filter({ operations: ["operations/1"], profile: profileA }), undefined)).toEqual({
      by: "operation",
      values: ["operations/1"],
    });
    expect(eventFilterIndex(filter({ profile: profileA }), [profileA, profileB])).toEqual({ by: "profile", values: [profileA] });
    expect(eventFilterIndex(undefined, [profileB])).toEqual({ by: "profile", values: [profileB] });
    expect(eventFilterIndex(filter({ operationTypes: [OperationType.PROFILE_CREATE] }), undefined)).toEqual({
      by: "operationType",
      values: [OperationType.PROFILE_CREATE],
    });
    expect(eventFilterIndex(filter({ types: [EventType.PROGRESS] }), undefined)).toEqual({ by: "type", values: [EventType.PROGRESS] });
    expect(eventFilterIndex(filter({ states: [TaskState.FAILED] }), undefined)).toBeUndefined();
  });
});
