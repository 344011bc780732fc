// Fan-out of committed events. The store is the truth: a subscriber is a cursor that reads
// events after its last sequence, from this in-memory window of recent events when it covers
// the cursor, else from the store. A subscriber that has caught up with the newest event
// follows live as a Tail: the hub hands each committed event only to the tails its index
// files under that event's operation, profile, operation type or event type (plus the
// unindexed ones), tests their compiled filters, and appends matches to their bounded buffers.
// A tail whose buffer overflows is dropped back to reading by cursor, so a slow subscriber
// holds at most its buffer and nothing that the writer waits for. While its subscription sleeps
// with a writer set (subscription.ts), the hub hands a tail's buffered matches straight to that
// writer (one write to its stream) instead of waking the subscription for them.
//
// Matching is done as each commit lands; delivering (the writes, the wake-ups) is paced: it runs
// in a later turn of the event loop and then rests for four times as long as it took, so it takes
// at most a fifth of the loop's time however many streams watch, and the commits made meanwhile
// go to each stream together, in one write. An event waits at most four times as long as a
// delivery to every stream takes (microseconds for a few streams, milliseconds for thousands); a
// burst is delivered without resting once it fills a sixteenth of a tail's buffer.
import type { StoreEvents, StoredEvent } from "../store/store.js";
import { PacedTask } from "../model/paced-task.js";
import { type Waiter, waitForWakeUp, wakeAll } from "../model/wake-up.js";
import { type CompiledFilter, type IndexDimension, indexValue } from "./event-filter.js";

const DIMENSIONS: readonly IndexDimension[] = ["operation", "profile", "operationType", "type"];

/** Events a tail may hold unread before it falls back to reading by cursor. */
const TAIL_BUFFER = 1024;

/**
 * The rest after a delivery, as a multiple of the time it took (see the top of this file). What
 * a delivery costs beyond the time it is measured for (the HTTP/2 writes it queued, its clients'
 * WINDOW_UPDATEs) comes on top; with 1,000 watchers, 4 kept submits at about 0.7 of their rate
 * with none, where 2 gave about 0.6 (docs/event-streams.md, "Paced delivery").
 */
const DELIVERY_PACE = 4;

/** Events committed since the last delivery from which the next one does not wait for its rest. */
const DELIVER_WITHOUT_REST = TAIL_BUFFER / 16;

/** What writes a tail's buffered matches straight to its stream (see Tail.writer). */
export interface TailWriter {
  writeLive(events: StoredEvent[]): boolean;
}

/**
 * A live subscriber: its filter, the matching events committed since it caught up and not yet
 * taken, and whether it fell behind (then it reads by cursor from its last taken event).
 */
export class Tail {
  /** Matching events not yet taken, in order. */
  buffer: StoredEvent[] = [];
  overflowed = false;
  readonly waiters = new Set<Waiter>();
  /**
   * Set by the subscription while it sleeps and its stream takes writes at once: takes the
   * matches buffered since the last delivery and returns whether it wrote them. A writer that
   * can take no more unsets itself; the subscription is woken whenever none is set at a delivery.
   */
  writer: TailWriter | undefined;

  constructor(
    readonly filter: CompiledFilter,
    private readonly hub: EventHub,
  ) {}

  /** Called by the hub for a committed event the index routed here. */
  offer(stored: StoredEvent): boolean {
    if (this.overflowed || !this.filter.matches(stored)) return false;
    if (this.buffer.length >= TAIL_BUFFER) {
      this.overflowed = true;
      this.buffer = [];
    } else this.buffer.push(stored);
    return true;
  }

  /** The buffered events, emptying the buffer. */
  take(): StoredEvent[] {
    const taken = this.buffer;
    this.buffer = [];
    return taken;
  }

  /** Resolves when an event is buffered, the tail overflows, the timeout passes, or `signal` aborts. */
  wait(timeoutMs: number, signal: AbortSignal): Promise<void> {
    if (this.buffer.length > 0 || this.overflowed || signal.aborted) return Promise.resolve();
    return waitForWakeUp(this.waiters, timeoutMs, signal);
  }

  /** Leaves the hub: no more events are offered. */
  close(): void {
    this.hub.unfollow(this);
  }
}

export class EventHub {
  private window: StoredEvent[] = [];
  private head: bigint;
  private waiters = new Set<Waiter>();
  /** Tails by `${dimension} ${value}`, each under every value of its one index dimension. */
  private indexed = new Map<string, Set<Tail>>();
  /** Tails without an index key: offered every event. */
  private unindexed = new Set<Tail>();
  /** Tails with matches (or an overflow) since the last delivery. */
  private undelivered = new Set<Tail>();
  /** Events committed since the last delivery. */
  private eventsSinceDelivery = 0;
  private readonly delivery = new PacedTask(() => this.deliver(), DELIVERY_PACE);

  private constructor(
    private readonly store: StoreEvents,
    private readonly windowSize: number,
    latest: bigint,
  ) {
    this.head = latest;
    store.onCommit((events) => this.append(events));
  }

  static async open(store: StoreEvents, windowSize = 4096): Promise<EventHub> {
    return new EventHub(store, windowSize, (await store.eventBounds()).latest);
  }

  /** The newest committed sequence. */
  latest(): bigint {
    return this.head;
  }

  private append(events: StoredEvent[]): void {
    // The window must be contiguous. Events that were compacted away before this server read
    // them (a replica cut off from a shared database for long) leave a gap: the window starts
    // again after it, and a subscriber behind the gap reads from the store and learns that its
    // cursor was compacted.
    const newest = this.window[this.window.length - 1];
    const gap = newest !== undefined && events[0]!.event.sequence !== newest.event.sequence + 1n;
    if (gap) this.window = [];
    this.window.push(...events);
    if (this.window.length > this.windowSize) this.window.splice(0, this.window.length - this.windowSize);
    this.head = events[events.length - 1]!.event.sequence;
    this.offerToTails(events, gap);
    const waiters = this.waiters;
    this.waiters = new Set();
    wakeAll(waiters);
  }

  /**
   * Routes each event to the tails that may want it (after a gap, every tail reads by cursor),
   * and asks for a delivery of what they matched.
   */
  private offerToTails(events: StoredEvent[], gap: boolean): void {
    const matched = this.undelivered;
    if (gap) {
      for (const tails of [this.unindexed, ...this.indexed.values()]) {
        for (const tail of tails) {
          tail.overflowed = true;
          matched.add(tail);
        }
      }
    } else {
      for (const stored of events) {
        for (const tail of this.unindexed) if (tail.offer(stored)) matched.add(tail);
        for (const dimension of DIMENSIONS) {
          const tails = this.indexed.get(`${dimension} ${indexValue(stored, dimension)}`);
          if (tails !== undefined) for (const tail of tails) if (tail.offer(stored)) matched.add(tail);
        }
      }
    }
    if (matched.size === 0) return;
    this.eventsSinceDelivery += events.length;
    this.delivery.request(gap || this.eventsSinceDelivery >= DELIVER_WITHOUT_REST);
  }

  /**
   * Hands each tail's buffered matches to its writer, or wakes its subscription to take them (a
   * subscription that woke meanwhile took them already).
   */
  private deliver(): void {
    const tails = this.undelivered;
    this.undelivered = new Set();
    this.eventsSinceDelivery = 0;
    for (const tail of tails) {
      if (!tail.overflowed && tail.buffer.length === 0) continue;
      if (!tail.overflowed && tail.writer?.writeLive(tail.buffer)) tail.buffer = [];
      if (tail.writer !== undefined && !tail.overflowed) continue;
      wakeAll(tail.waiters);
    }
  }

  /**
   * Follows live from the newest event (the caller has read everything up to `latest()`):
   * every later committed event its filter matches is buffered in the returned tail.
   */
  follow(filter: CompiledFilter): Tail {
    const tail = new Tail(filter, this);
    if (filter.index === undefined) this.unindexed.add(tail);
    for (const value of filter.index?.values ?? []) {
      const key = `${filter.index!.by} ${value}`;
      let tails = this.indexed.get(key);
      if (tails === undefined) this.indexed.set(key, (tails = new Set()));
      tails.add(tail);
    }
    return tail;
  }

  /** Files `tail` under nothing any more (Tail.close). */
  unfollow(tail: Tail): void {
    this.undelivered.delete(tail);
    this.unindexed.delete(tail);
    for (const value of tail.filter.index?.values ?? []) {
      const key = `${tail.filter.index!.by} ${value}`;
      const tails = this.indexed.get(key);
      tails?.delete(tail);
      if (tails?.size === 0) this.indexed.delete(key);
    }
  }

  /** Whether the window holds every committed event after `after` (the seam with history-replay.ts). */
  covers(after: bigint): boolean {
    const first = this.window[0];
    return after >= this.head || (first !== undefined && first.event.sequence <= after + 1n);
  }

  /** Up to `limit` committed events after `after`, in order. */
  async read(after: bigint, limit: number): Promise<StoredEvent[]> {
    if (after >= this.head) return [];
    if (this.covers(after)) {
      const start = Number(after + 1n - this.window[0]!.event.sequence);
      return this.window.slice(start, start + limit);
    }
    return this.store.readEvents(after, limit);
  }

  /** Resolves when an event after `after` is committed, the timeout passes, or `signal` aborts. */
  waitBeyond(after: bigint, timeoutMs: number, signal: AbortSignal): Promise<void> {
    if (after < this.head || signal.aborted) return Promise.resolve();
    return waitForWakeUp(this.waiters, timeoutMs, signal);
  }
}
