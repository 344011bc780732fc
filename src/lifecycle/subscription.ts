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
import type { EventHub, Tail, TailWriter } from "./event-hub.js";
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
  /**
   * Writes a bookmark at `sequence` to the stream, as yielding one would; false when it wrote
   * none (then it is yielded). Without it, bookmarks are always yielded.
   */
  bookmark?(sequence: bigint): boolean;
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
  /** Equal for subscriptions whose `matches` select exactly the same events (CompiledFilter.key). */
  filterKey?: string;
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

/**
 * One subscription's state and steps, for as long as its stream lives. A class rather than
 * closures in subscribe: its methods are made once for every subscriber, where each closure made
 * per call is an object of its own — and, under tsx (esbuild's keepNames gives each named one
 * its `name` with defineProperty), a function in dictionary mode, about 400 bytes a closure.
 * It is its tail's writer (writeLive) while it sleeps.
 */
class Subscriber implements TailWriter {
  cursor: bigint;
  catchingUp = true;
  lastSentAt = Date.now();
  tail: Tail | undefined;
  /** Its last event was written to the stream directly: nothing more is to be sent. */
  ended = false;

  constructor(
    readonly options: SubscriptionOptions,
    start: bigint,
  ) {
    this.cursor = start;
  }

  idleFor(): number {
    return Date.now() - this.lastSentAt;
  }

  bookmarkDue(): boolean {
    return this.options.bookmarkIntervalMs > 0 && this.idleFor() >= this.options.bookmarkIntervalMs;
  }

  waitMs(): number {
    return this.options.bookmarkIntervalMs > 0 ? this.options.bookmarkIntervalMs - this.idleFor() : 60_000;
  }

  /**
   * Sends the matching events of `events` (all of them when the tail `matched` them already):
   * written to the stream in one go when it takes writes at once, else yielded one by one;
   * returns whether the stream ends with the last one sent.
   */
  *send(events: StoredEvent[], matched = false): Generator<SubscriptionItem, boolean> {
    if (this.writeDirectly(matched ? events : events.filter(this.options.matches))) return this.ended;
    for (const stored of events) {
      if (!matched && !this.options.matches(stored)) continue;
      yield { kind: "event", stored };
      this.lastSentAt = Date.now();
      if (this.options.isLast?.(stored)) return true;
    }
    return false;
  }

  *bookmark(): Generator<SubscriptionItem> {
    if (this.bookmarkDirectly()) return;
    yield { kind: "bookmark", sequence: this.cursor };
    this.lastSentAt = Date.now();
  }

  /**
   * A bookmark written to the stream directly, when it takes writes at once: an idle subscriber
   * then wakes only itself every bookmark interval, not its call's whole chain of generators
   * (which, for thousands of idle streams, is most of what they allocate).
   */
  private bookmarkDirectly(): boolean {
    const { direct, signal } = this.options;
    if (signal.aborted || direct?.bookmark === undefined || !direct.writable() || !direct.bookmark(this.cursor)) return false;
    this.lastSentAt = Date.now();
    return true;
  }

  /**
   * Writes `events` (matching ones) up to the last one to the stream in one go, when it takes
   * writes at once: a batch of history, of the window or of the tail's buffer then costs one
   * write, not a pass through the call's chain of generators per event. The call's loop is
   * waiting for this subscription meanwhile, so the writes keep their order.
   */
  private writeDirectly(events: StoredEvent[]): boolean {
    const { direct, isLast, signal } = this.options;
    if (signal.aborted || direct === undefined || !direct.writable()) return false;
    if (events.length === 0) return true;
    const last = isLast === undefined ? -1 : events.findIndex(isLast);
    if (!direct.deliver(last < 0 ? events : events.slice(0, last + 1))) return false;
    this.lastSentAt = Date.now();
    if (last >= 0) this.ended = true;
    return true;
  }

  /** The tail's writer while the subscription sleeps. */
  writeLive(events: StoredEvent[]): boolean {
    if (!this.writeDirectly(events)) return this.disarm(false);
    if (this.ended || !this.options.direct!.writable()) this.disarm(true);
    return true;
  }

  disarm(written: boolean): boolean {
    if (this.tail !== undefined) this.tail.writer = undefined;
    return written;
  }

  /**
   * Waits until a direct stream takes writes at once again, so that what is sent next goes out
   * in one write rather than one yield per event (ready() is where a client that stopped reading
   * is cut off); a closed stream gets nothing more.
   */
  async ready(): Promise<void> {
    const { direct } = this.options;
    if (direct !== undefined && !direct.writable()) await direct.ready();
  }

  /** Sleeps on the tail, letting the hub write to the stream meanwhile when it takes writes at once. */
  async sleepOn(following: Tail): Promise<void> {
    const { direct } = this.options;
    await this.ready();
    following.writer = direct?.writable() ? this : undefined;
    try {
      await following.wait(this.waitMs(), this.options.signal);
    } finally {
      following.writer = undefined;
    }
  }
}

export async function* subscribe(sources: EventSources, options: SubscriptionOptions): AsyncGenerator<SubscriptionItem> {
  const { hub, history } = sources;
  const self = new Subscriber(options, await startCursor(sources, options.after));
  try {
    while (!options.signal.aborted) {
      const { tail } = self;
      if (tail !== undefined) {
        if (tail.overflowed) {
          // Fell behind: back to reading by cursor from the last event sent.
          tail.close();
          self.tail = undefined;
          continue;
        }
        const buffered = tail.take();
        if (buffered.length > 0) {
          await self.ready();
          if (yield* self.send(buffered, true)) return;
          self.cursor = buffered[buffered.length - 1]!.event.sequence;
          continue;
        }
        // Every event up to the newest was offered to the tail: those not buffered did not match
        // (or were written to the stream directly).
        if (self.ended) return;
        self.cursor = hub.latest();
        if (self.bookmarkDue()) yield* self.bookmark();
        else await self.sleepOn(tail);
        if (self.ended) return;
        continue;
      }
      if (!hub.covers(self.cursor)) {
        for await (const page of history.pages(hub, self.cursor, options.selection, options.signal)) {
          await self.ready();
          if (yield* self.send(page.events)) return;
          self.cursor = page.through;
          if (self.bookmarkDue()) yield* self.bookmark();
        }
        continue;
      }
      // Until its first short page a subscription is a replay: its full pages of the window take
      // their turns like those of the history, so a hundred replays of a full window cannot hold
      // the event loop either. From then on it follows live events without waiting for turns.
      const after = self.cursor;
      const fullPage = self.catchingUp && hub.latest() - after > BigInt(PAGE);
      const batch = fullPage ? ((await sources.replays.run(() => hub.read(after, PAGE), options.signal)) ?? []) : await hub.read(after, PAGE);
      if (batch.length < PAGE) self.catchingUp = false;
      if (batch.length > 0 && batch[0]!.event.sequence !== after + 1n) {
        // The window restarted after a gap (events compacted before this server read them).
        throw eventsCompacted(after, batch[0]!.event.sequence);
      }
      if (batch.length > 0) await self.ready();
      if (yield* self.send(batch)) return;
      if (batch.length > 0) {
        self.cursor = batch[batch.length - 1]!.event.sequence;
        continue;
      }
      // Caught up: from here the hub hands this subscriber its matching events.
      if (after >= hub.latest()) {
        self.tail = hub.follow({ index: options.index, matches: options.matches, ...(options.filterKey !== undefined ? { key: options.filterKey } : {}) });
        continue;
      }
      if (self.bookmarkDue()) yield* self.bookmark();
      else await hub.waitBeyond(after, self.waitMs(), options.signal);
    }
  } finally {
    self.tail?.close();
  }
}
