// The PostgreSQL store's event feed, over a fake events table: every committed event reaches the
// listeners once, in sequence order, whoever committed it; a writer is answered after its own
// events were delivered.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { OperationEventSchema } from "../../src/gen/agentmachine/v1/event_pb.js";
import { EventFeed } from "../../src/store/postgres/event-feed.js";
import type { StoredEvent } from "../../src/store/store.js";

const stored = (sequence: bigint): StoredEvent => ({ event: create(OperationEventSchema, { sequence }), profile: "profiles/p", operationType: 0, labels: {} });
const range = (from: number, to: number): StoredEvent[] => Array.from({ length: to - from + 1 }, (_, i) => stored(BigInt(from + i)));

/** A feed over an in-memory table whose reads can be held, failed, and counted. */
function fakeFeed(start = 0n) {
  const table: StoredEvent[] = [];
  const delivered: bigint[] = [];
  let reads = 0;
  let hold: Promise<void> | undefined;
  let failNext: Error | undefined;
  const feed = new EventFeed({
    async read(after, limit) {
      reads += 1;
      // What is committed when the read starts, as a snapshot would see it.
      const snapshot = table.filter((e) => e.event.sequence > after).slice(0, limit);
      await hold;
      if (failNext !== undefined) {
        const error = failNext;
        failNext = undefined;
        throw error;
      }
      return snapshot;
    },
    deliver: (events) => delivered.push(...events.map((e) => e.event.sequence)),
  });
  feed.start(start);
  return {
    feed,
    delivered,
    commit: (...events: StoredEvent[]) => table.push(...events),
    reads: () => reads,
    holdReads() {
      let release!: () => void;
      hold = new Promise((resolve) => (release = resolve));
      return () => {
        hold = undefined;
        release();
      };
    },
    failNextRead: (error: Error) => (failNext = error),
  };
}

const settled = () => new Promise((resolve) => setTimeout(resolve, 0));

describe("EventFeed", () => {
  it("delivers an own commit that follows the position at once, without reading", async () => {
    const { feed, delivered, commit, reads } = fakeFeed(4n);
    commit(stored(5n));
    await feed.committed([stored(5n)]);
    expect(delivered).toEqual([5n]);
    expect(reads()).toBe(0);
    expect(feed.position).toBe(5n);
  });

  it("answers a writer whose commit follows others' only after a read delivered them all, in order", async () => {
    const { feed, delivered, commit } = fakeFeed();
    // Another replica committed 1 and 2; this one then committed 3.
    commit(...range(1, 3));
    await feed.committed([stored(3n)]);
    expect(delivered).toEqual([1n, 2n, 3n]);
  });

  it("delivers each event once when notifications, polls and own commits overlap, and reads at most twice per burst", async () => {
    const { feed, delivered, commit, reads, holdReads } = fakeFeed();
    commit(...range(1, 2));
    const release = holdReads();
    feed.notified(2n);
    // While the first read is held: more commits and triggers, which ask for one more pass.
    commit(...range(3, 6));
    feed.notified(4n);
    feed.request();
    const writer = feed.committed([stored(6n)]);
    feed.notified(6n);
    release();
    await writer;
    expect(delivered).toEqual([1n, 2n, 3n, 4n, 5n, 6n]);
    expect(reads()).toBe(2);
    // A notification of something delivered already reads nothing.
    feed.notified(5n);
    await settled();
    expect(reads()).toBe(2);
  });

  it("reads page after page until it has caught up", async () => {
    const { feed, delivered, commit } = fakeFeed();
    commit(...range(1, 1300));
    await feed.catchUp();
    expect(delivered).toHaveLength(1300);
    expect(delivered[1299]).toBe(1300n);
  });

  it("keeps a writer waiting through a failed read, and answers it after the next successful one", async () => {
    const { feed, delivered, commit, failNextRead } = fakeFeed();
    commit(...range(1, 2));
    failNextRead(new Error("connection lost"));
    let answered = false;
    const writer = feed.committed([stored(2n)]).then(() => (answered = true));
    await settled();
    expect(answered).toBe(false);
    expect(delivered).toEqual([]);
    // The connection is back: its catch-up delivers what was missed.
    await feed.catchUp();
    await writer;
    expect(delivered).toEqual([1n, 2n]);
  });

  it("answers waiting writers when stopped, and delivers nothing after", async () => {
    const { feed, delivered, commit, holdReads } = fakeFeed();
    commit(...range(1, 2));
    const release = holdReads();
    const writer = feed.committed([stored(2n)]);
    feed.stop();
    await writer;
    release();
    await settled();
    expect(delivered).toEqual([]);
  });
});
