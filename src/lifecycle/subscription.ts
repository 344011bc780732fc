// One subscriber's stream of events: replay from the cursor, then follow live, as one loop
// over the EventHub (see event-hub.ts). The seam: while the cursor is behind the hub's newest
// event the subscriber reads pages by cursor (the replay); once it has caught up it follows as
// a Tail, to which the hub hands only its matching events; a tail that overflows goes back to
// reading by cursor from the last event it sent. Bookmarks carry the sequence considered so far
// when nothing matching was sent for a while; they never go backwards.
import type { StoreEvents, StoredEvent } from "../store/store.js";
import { cursorAhead, eventsCompacted } from "./errors.js";
import type { IndexKeys } from "./event-filter.js";
import type { EventHub, Tail } from "./event-hub.js";

export type SubscriptionItem = { kind: "event"; stored: StoredEvent } | { kind: "bookmark"; sequence: bigint };

export interface SubscriptionOptions {
  /** Only events with a larger sequence; 0 means every retained event. */
  after: bigint;
  matches: (stored: StoredEvent) => boolean;
  /** What the hub files the live tail under (event-filter.ts); undefined: it is offered every event. */
  index?: IndexKeys;
  signal: AbortSignal;
  /** Send a bookmark after this long without a matching event; 0 never. */
  bookmarkIntervalMs: number;
  /** Stop once this returns true for a sent event (WatchOperation stops at the terminal one). */
  isLast?: (stored: StoredEvent) => boolean;
}

const PAGE = 512;

/**
 * The cursor to start from. OutOfRange when events after `after` were already compacted away,
 * or when `after` is beyond the newest event (a cursor this store never handed out).
 */
export async function checkCursor(store: StoreEvents, after: bigint): Promise<bigint> {
  const { oldest, latest } = await store.eventBounds();
  if (after > latest) throw cursorAhead(after, latest);
  if (after === 0n) return oldest > 1n ? oldest - 1n : 0n;
  if (after + 1n < oldest && after < latest) throw eventsCompacted(after, oldest);
  return after;
}

export async function* subscribe(hub: EventHub, store: StoreEvents, options: SubscriptionOptions): AsyncGenerator<SubscriptionItem> {
  let cursor = await checkCursor(store, options.after);
  let lastSentAt = Date.now();
  let tail: Tail | undefined;
  try {
    while (!options.signal.aborted) {
      let batch: StoredEvent[];
      if (tail === undefined) {
        // Replay: by cursor, from the hub's window or the store.
        batch = await hub.read(cursor, PAGE);
        if (batch.length > 0 && batch[0]!.event.sequence !== cursor + 1n) {
          // Compaction overtook a subscriber that was reading from the store.
          throw eventsCompacted(cursor, batch[0]!.event.sequence);
        }
        // Caught up: from here the hub hands this subscriber its matching events.
        if (batch.length === 0 && cursor >= hub.latest()) tail = hub.follow({ index: options.index, matches: options.matches });
      } else if (tail.overflowed) {
        // Fell behind: back to reading by cursor from the last event sent.
        tail.close();
        tail = undefined;
        continue;
      } else {
        batch = tail.take();
        // Every event up to the newest was offered to the tail: those not buffered did not match.
        if (batch.length === 0) cursor = hub.latest();
      }
      for (const stored of batch) {
        cursor = stored.event.sequence;
        if (tail === undefined && !options.matches(stored)) continue;
        yield { kind: "event", stored };
        lastSentAt = Date.now();
        if (options.isLast?.(stored)) return;
      }
      if (batch.length > 0) continue;
      const idleFor = Date.now() - lastSentAt;
      if (options.bookmarkIntervalMs > 0 && idleFor >= options.bookmarkIntervalMs) {
        yield { kind: "bookmark", sequence: cursor };
        lastSentAt = Date.now();
        continue;
      }
      const wait = options.bookmarkIntervalMs > 0 ? options.bookmarkIntervalMs - idleFor : 60_000;
      await (tail === undefined ? hub.waitBeyond(cursor, wait, options.signal) : tail.wait(wait, options.signal));
    }
  } finally {
    tail?.close();
  }
}
