// A replay's history (src/lifecycle/history-replay.ts) reads its next page while its caller sends
// the current one. The pages still come in order with no gap or repeat, and a replay that stops
// while that next page is being read leaves no failure behind, not even when that read fails.
import { create } from "@bufbuild/protobuf";
import { afterAll, afterEach, expect, it } from "vitest";
import { OperationEventSchema } from "../../src/gen/agentmachine/v1/event_pb.js";
import { HistoryReader, type LiveWindow } from "../../src/lifecycle/history-replay.js";
import { ReplayScheduler } from "../../src/model/replay-scheduler.js";
import type { EventPage, EventPageQuery, StoredEvent } from "../../src/store/store.js";

const LATEST = 1000n;
const window: LiveWindow = { latest: () => LATEST, covers: (after) => after >= LATEST };

function storedEvent(sequence: bigint): StoredEvent {
  return { event: create(OperationEventSchema, { sequence }), profile: "profiles/p", operationType: 0, labels: {} };
}

/** A store of events 1..LATEST that records the pages asked for; the page after `failAfter` fails. */
function pagedStore(failAfter?: bigint) {
  const asked: bigint[] = [];
  return {
    asked,
    async readEventPage({ after, through, limit }: EventPageQuery): Promise<EventPage> {
      asked.push(after);
      if (after === failAfter) throw new Error("the store went away");
      const events: StoredEvent[] = [];
      for (let sequence = after + 1n; sequence <= through && events.length < limit; sequence++) events.push(storedEvent(sequence));
      return { events, oldest: 1n };
    },
  };
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
process.on("unhandledRejection", onUnhandled);
afterEach(() => {
  unhandled.length = 0;
});
afterAll(() => {
  process.off("unhandledRejection", onUnhandled);
});

it("reads the next page while the caller holds this one, and gives every event once, in order", async () => {
  const store = pagedStore();
  const reader = new HistoryReader(store, new ReplayScheduler(4), { pageEvents: 300, pageSpan: 8192 });
  const sequences: bigint[] = [];
  const throughs: bigint[] = [];
  for await (const page of reader.pages(window, 0n, {}, new AbortController().signal)) {
    if (throughs.length === 0) {
      for (let i = 0; i < 5; i++) await turn();
      // The caller has not asked for the second page yet, and it is already being read.
      expect(store.asked).toEqual([0n, 300n]);
    }
    sequences.push(...page.events.map((stored) => stored.event.sequence));
    throughs.push(page.through);
  }
  expect(sequences).toEqual(Array.from({ length: 1000 }, (_, index) => BigInt(index + 1)));
  expect(throughs).toEqual([300n, 600n, 900n, 1000n]);
});

it("leaves no failure behind when it stops while its next page is read, and that read fails", async () => {
  const store = pagedStore(300n);
  const reader = new HistoryReader(store, new ReplayScheduler(4), { pageEvents: 300, pageSpan: 8192 });
  for await (const page of reader.pages(window, 0n, {}, new AbortController().signal)) {
    expect(page.through).toBe(300n);
    break;
  }
  for (let i = 0; i < 5; i++) await turn();
  expect(store.asked).toEqual([0n, 300n]);
  expect(unhandled).toEqual([]);
});

it("fails the replay with the store's error when it goes on to a page that failed", async () => {
  const reader = new HistoryReader(pagedStore(300n), new ReplayScheduler(4), { pageEvents: 300, pageSpan: 8192 });
  const read: bigint[] = [];
  await expect(
    (async () => {
      for await (const page of reader.pages(window, 0n, {}, new AbortController().signal)) read.push(page.through);
    })(),
  ).rejects.toThrow("the store went away");
  expect(read).toEqual([300n]);
});
