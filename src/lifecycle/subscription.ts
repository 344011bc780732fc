// One subscriber's stream of events: the history the hub's window no longer holds, read from
// the store in filtered, scheduled pages (history-replay.ts), then the window from the EventHub
// (event-hub.ts), as one loop over one cursor. Once it has caught up with the hub's newest event
// it follows as a Tail, to which the hub hands only its matching events; a tail that overflows
// goes back to reading by cursor from the last event it sent. With a DirectDelivery, a subscription
// that sleeps on its tail lets the hub write each commit's matches straight to its stream, so a
// live event costs each subscriber one write instead of a resumption of its call's chain of
// generators; it wakes to send a bookmark, when its stream stops taking writes at once, or at
// its last event. Bookmarks carry the sequence
// considered so far when nothing matching was sent for a while; they never go backwards.
import type { EventSelection, StoreEvents, StoredEvent } from "../store/store.js";
import { cursorAhead, eventsCompacted } from "./errors.js";
import type { IndexKeys } from "./event-filter.js";
import type { EventHub, Tail } from "./event-hub.js";
import type { HistoryReader } from "./history-replay.js";
import type { ReplayScheduler } from "../model/replay-scheduler.js";
import type { RetentionFloor } from "./retention-floor.js";

export type SubscriptionItem = { kind: "event"; stored: StoredEvent } | { kind: "bookmark"; sequence: bigint };

/** Where a subscription's events come from. */
export interface EventSources {
  /** The window of recent events and the live tail. */
  hub: EventHub;
  /** The pages of history the window no longer holds. */
  history: HistoryReader;
  /** The turns a replay's pages of the window take too, until it has caught up (see subscribe). */
  replays: ReplayScheduler;
  retention: RetentionFloor;
  /** For the cursor checks the window cannot answer. */
  store: StoreEvents;
}

/** A stream that can take events without the subscription yielding them (the lean gRPC path's). */
export interface DirectDelivery {
  /**
   * Writes the events' messages to the stream, as yielding them would; false when it wrote none
   * of them (then they are yielded, and whatever refused them reports why).
   */
  deliver(events: readonly StoredEvent[]): boolean;
  /** Whether a write now is taken at once (the stream is open and not waiting for its client to read). */
  writable(): boolean;
  /** Resolves when the stream takes writes at once again, or can take none (closed, or cut off as too slow). */
  ready(): Promise<void>;
}

export interface SubscriptionOptions {
  /** Only events with a larger sequence; 0 means every retained event. */
  after: bigint;
  /** What the store can select of `matches` in its query: a superset of the matching events. */
  selection: EventSelection;
  /** The exact rule, applied to every event before it is sent. */
  matches: (stored: StoredEvent) => boolean;
  /** What the hub files the live tail under (event-filter.ts); undefined: it is offered every event. */
  index?: IndexKeys;
  signal: AbortSignal;
  /** Send a bookmark after this long without a matching event; 0 never. */
  bookmarkIntervalMs: number;
  /** Stop once this returns true for a sent event (WatchOperation stops at the terminal one). */
  isLast?: (stored: StoredEvent) => boolean;
  /** Live events may be written by the hub straight to this stream (see the top of this file). */
  direct?: DirectDelivery;
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

/**
 * The cursor to start from. A cursor the hub's window holds, retained as far as this server
 * knows (RetentionFloor), needs nothing of the store; any other is checked there (checkCursor).
 */
async function startCursor({ hub, retention, store }: EventSources, after: bigint): Promise<bigint> {
  if (after <= hub.latest()) {
    const start = after === 0n ? (retention.oldest > 1n ? retention.oldest - 1n : 0n) : after;
    if (start + 1n >= retention.oldest && hub.covers(start)) return start;
  }
  return checkCursor(store, after);
}

export async function* subscribe(sources: EventSources, options: SubscriptionOptions): AsyncGenerator<SubscriptionItem> {
  const { hub, history } = sources;
  let cursor = await startCursor(sources, options.after);
  let catchingUp = true;
  let lastSentAt = Date.now();
  let tail: Tail | undefined;
  const idleFor = () => Date.now() - lastSentAt;
  const bookmarkDue = () => options.bookmarkIntervalMs > 0 && idleFor() >= options.bookmarkIntervalMs;
  const waitMs = () => (options.bookmarkIntervalMs > 0 ? options.bookmarkIntervalMs - idleFor() : 60_000);
  /**
   * Sends the matching events of `events` (all of them when the tail `matched` them already);
   * returns whether the stream ends with the last one sent.
   */
  function* send(events: StoredEvent[], matched = false): Generator<SubscriptionItem, boolean> {
    for (const stored of events) {
      if (!matched && !options.matches(stored)) continue;
      yield { kind: "event", stored };
      lastSentAt = Date.now();
      if (options.isLast?.(stored)) return true;
    }
    return false;
  }
  let ended = false;
  /** The tail's writer while the subscription sleeps: the matching events up to the last one, written in one go. */
  const writeDirectly = (events: StoredEvent[]): boolean => {
    const { direct, isLast } = options;
    if (options.signal.aborted || direct === undefined) return disarm(false);
    const last = isLast === undefined ? -1 : events.findIndex(isLast);
    if (!direct.deliver(last < 0 ? events : events.slice(0, last + 1))) return disarm(false);
    lastSentAt = Date.now();
    if (last >= 0) ended = true;
    if (ended || !direct.writable()) disarm(true);
    return true;
  };
  const disarm = (written: boolean): boolean => {
    if (tail !== undefined) tail.writer = undefined;
    return written;
  };
  /** Sleeps on the tail, letting the hub write to the stream meanwhile when it takes writes at once. */
  async function sleepOn(following: Tail): Promise<void> {
    const { direct } = options;
    // A stream that takes no more for now gets its events yielded once it does (ready() is
    // where a client that stopped reading is cut off); a closed one gets none.
    if (direct !== undefined && !direct.writable()) await direct.ready();
    following.writer = direct?.writable() ? writeDirectly : undefined;
    try {
      await following.wait(waitMs(), options.signal);
    } finally {
      following.writer = undefined;
    }
  }
  function* bookmark(): Generator<SubscriptionItem> {
    yield { kind: "bookmark", sequence: cursor };
    lastSentAt = Date.now();
  }
  try {
    while (!options.signal.aborted) {
      if (tail !== undefined) {
        if (tail.overflowed) {
          // Fell behind: back to reading by cursor from the last event sent.
          tail.close();
          tail = undefined;
          continue;
        }
        const buffered = tail.take();
        if (buffered.length > 0) {
          if (yield* send(buffered, true)) return;
          cursor = buffered[buffered.length - 1]!.event.sequence;
          continue;
        }
        // Every event up to the newest was offered to the tail: those not buffered did not match
        // (or were written to the stream directly).
        if (ended) return;
        cursor = hub.latest();
        if (bookmarkDue()) yield* bookmark();
        else await sleepOn(tail);
        if (ended) return;
        continue;
      }
      if (!hub.covers(cursor)) {
        for await (const page of history.pages(hub, cursor, options.selection, options.signal)) {
          if (yield* send(page.events)) return;
          cursor = page.through;
          if (bookmarkDue()) yield* bookmark();
        }
        continue;
      }
      // Until its first short page a subscription is a replay: its full pages of the window take
      // their turns like those of the history, so a hundred replays of a full window cannot hold
      // the event loop either. From then on it follows live events without waiting for turns.
      const read = () => hub.read(cursor, PAGE);
      const fullPage = catchingUp && hub.latest() - cursor > BigInt(PAGE);
      const batch = fullPage ? ((await sources.replays.run(read, options.signal)) ?? []) : await read();
      if (batch.length < PAGE) catchingUp = false;
      if (batch.length > 0 && batch[0]!.event.sequence !== cursor + 1n) {
        // The window restarted after a gap (events compacted before this server read them).
        throw eventsCompacted(cursor, batch[0]!.event.sequence);
      }
      if (yield* send(batch)) return;
      if (batch.length > 0) {
        cursor = batch[batch.length - 1]!.event.sequence;
        continue;
      }
      // Caught up: from here the hub hands this subscriber its matching events.
      if (cursor >= hub.latest()) {
        tail = hub.follow({ index: options.index, matches: options.matches });
        continue;
      }
      if (bookmarkDue()) yield* bookmark();
      else await hub.waitBeyond(cursor, waitMs(), options.signal);
    }
  } finally {
    tail?.close();
  }
}
