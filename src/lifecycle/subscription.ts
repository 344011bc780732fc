// One subscriber's stream of events: replay from the cursor, then follow live, as one loop
// over the EventHub (see event-hub.ts). Bookmarks carry the sequence considered so far when
// nothing matching was sent for a while; they never go backwards.
import type { StoreEvents, StoredEvent } from "../store/store.js";
import { cursorAhead, eventsCompacted } from "./errors.js";
import type { EventHub } from "./event-hub.js";

export type SubscriptionItem = { kind: "event"; stored: StoredEvent } | { kind: "bookmark"; sequence: bigint };

export interface SubscriptionOptions {
  /** Only events with a larger sequence; 0 means every retained event. */
  after: bigint;
  matches: (stored: StoredEvent) => boolean;
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
  while (!options.signal.aborted) {
    const batch = await hub.read(cursor, PAGE);
    if (batch.length > 0 && batch[0]!.event.sequence !== cursor + 1n) {
      // Compaction overtook a subscriber that was reading from the store.
      throw eventsCompacted(cursor, batch[0]!.event.sequence);
    }
    for (const stored of batch) {
      cursor = stored.event.sequence;
      if (!options.matches(stored)) continue;
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
    await hub.waitBeyond(cursor, wait, options.signal);
  }
}
