// Fan-out of committed events. The store is the truth: a subscriber is a cursor that reads
// events after its last sequence, from this in-memory window of recent events when it covers
// the cursor, else from the store. A subscriber that has caught up with the newest event
// follows live as a Tail, in a group with the tails whose filter is the same (its key): the hub
// offers each committed event only to the groups its index files under that event's operation,
// profile, operation type or event type (plus the unindexed ones), tests each group's compiled
// filter once, and hands the matches to every tail of the group, as one shared list. A tail
// whose buffer overflows is dropped back to reading by cursor, so a slow subscriber holds at
// most its buffer and nothing that the writer waits for. While its subscription sleeps with a
// writer set (subscription.ts), the hub hands a tail's matches straight to that writer (one
// write to its stream) instead of waking the subscription for them.
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
 * Live subscribers with the same filter (CompiledFilter.key): the hub tests each event once for
 * all of them, and hands them the same list of matches, so that a thousand watchers of the same
 * events cost one match per event and share one list (and, on the lean path, one joined write).
 */
class TailGroup {
  readonly tails = new Set<Tail>();
  /** The matching events committed since the last delivery, in order, shared by the tails. */
  pending: StoredEvent[] = [];

  constructor(
    readonly filter: CompiledFilter,
    /** Where the hub keeps it while it has tails: its filter's key, or none (a group of one). */
    readonly key: string | undefined,
  ) {}
}

/**
 * A live subscriber: the matching events committed since it caught up and not yet taken (those
 * handed to it at a delivery, and its share of its group's pending ones), and whether it fell
 * behind (then it reads by cursor from its last taken event).
 */
export class Tail {
  /** Matching events handed to it at deliveries and not yet taken, in order. */
  private buffer: StoredEvent[] = [];
  /** How many of its group's pending events it has already (they came before it followed, or take() took them). */
  seen: number;
  overflowed = false;
  readonly waiters = new Set<Waiter>();
  /**
   * Set by the subscription while it sleeps and its stream takes writes at once: takes the
   * matches committed since the last delivery and returns whether it wrote them. A writer that
   * can take no more unsets itself; the subscription is woken whenever none is set at a delivery.
   */
  writer: TailWriter | undefined;

  constructor(
    readonly group: TailGroup,
    private readonly hub: EventHub,
  ) {
    // The events its group matched before it followed were read by its subscription from the window.
    this.seen = group.pending.length;
  }

  /** Matching events handed to it and not yet taken. */
  get buffered(): number {
    return this.buffer.length;
  }

  /** Hands it `events` (new to it) at a delivery; false when they overflow its buffer (then it reads by cursor). */
  receive(events: readonly StoredEvent[]): boolean {
    if (this.overflowed) return false;
    if (this.buffer.length + events.length > TAIL_BUFFER) {
      this.overflowed = true;
      this.buffer = [];
      return false;
    }
    for (const stored of events) this.buffer.push(stored);
    return true;
  }

  /**
   * The matching events committed and not yet taken, in order: those handed to it, then its
   * group's pending ones it has not taken (the next delivery hands it only the rest).
   */
  take(): StoredEvent[] {
    const { pending } = this.group;
    const taken = this.seen < pending.length ? this.buffer.concat(pending.slice(this.seen)) : this.buffer;
    this.seen = pending.length;
    this.buffer = [];
    return taken;
  }

  /** Resolves when an event was handed to it, the tail overflows, the timeout passes, or `signal` aborts. */
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
  /** Groups by `${dimension} ${value}`, each under every value of its one index dimension. */
  private indexed = new Map<string, Set<TailGroup>>();
  /** Groups without an index key: offered every event. */
  private unindexed = new Set<TailGroup>();
  /** Groups with a key, by key, while they have tails. */
  private shared = new Map<string, TailGroup>();
  /** Groups with matches since the last delivery. */
  private undelivered = new Set<TailGroup>();
  /** Tails a gap made read by cursor, to wake at the next delivery. */
  private overflowedTails = new Set<Tail>();
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
    this.offerToGroups(events, gap);
    const waiters = this.waiters;
    this.waiters = new Set();
    wakeAll(waiters);
  }

  /**
   * Tests each event once for each group that may want it (after a gap, every tail reads by
   * cursor instead), and asks for a delivery of what they matched.
   */
  private offerToGroups(events: StoredEvent[], gap: boolean): void {
    if (gap) {
      for (const groups of [this.unindexed, ...this.indexed.values()]) {
        for (const group of groups) {
          group.pending = [];
          for (const tail of group.tails) {
            tail.overflowed = true;
            this.overflowedTails.add(tail);
          }
        }
      }
    } else {
      for (const stored of events) {
        for (const group of this.unindexed) this.offer(group, stored);
        for (const dimension of DIMENSIONS) {
          const groups = this.indexed.get(`${dimension} ${indexValue(stored, dimension)}`);
          if (groups !== undefined) for (const group of groups) this.offer(group, stored);
        }
      }
    }
    if (this.undelivered.size === 0 && this.overflowedTails.size === 0) return;
    this.eventsSinceDelivery += events.length;
    this.delivery.request(gap || this.eventsSinceDelivery >= DELIVER_WITHOUT_REST);
  }

  private offer(group: TailGroup, stored: StoredEvent): void {
    if (!group.filter.matches(stored)) return;
    group.pending.push(stored);
    this.undelivered.add(group);
  }

  /** Hands each tail the matches committed since the last delivery that it has not taken yet. */
  private deliver(): void {
    const groups = this.undelivered;
    const overflowed = this.overflowedTails;
    this.undelivered = new Set();
    this.overflowedTails = new Set();
    this.eventsSinceDelivery = 0;
    for (const group of groups) {
      const events = group.pending;
      group.pending = [];
      for (const tail of group.tails) {
        const fresh = tail.seen === 0 ? events : events.slice(tail.seen);
        tail.seen = 0;
        if (fresh.length > 0) this.handOver(tail, fresh);
      }
    }
    for (const tail of overflowed) wakeAll(tail.waiters);
  }

  /** `events` to `tail`'s writer when it has one and nothing else to send first, else into its buffer, waking its subscription. */
  private handOver(tail: Tail, events: StoredEvent[]): void {
    if (tail.overflowed) return;
    const written = tail.writer !== undefined && tail.buffered === 0 && events.length <= TAIL_BUFFER && tail.writer.writeLive(events);
    if (!written) tail.receive(events);
    // A writer that took them and can take more lets the subscription sleep on.
    if (!written || tail.writer === undefined) wakeAll(tail.waiters);
  }

  /**
   * Follows live from the newest event (the caller has read everything up to `latest()`):
   * every later committed event its filter matches is handed to the returned tail.
   */
  follow(filter: CompiledFilter): Tail {
    let group = filter.key === undefined ? undefined : this.shared.get(filter.key);
    if (group === undefined) {
      group = new TailGroup(filter, filter.key);
      if (group.key !== undefined) this.shared.set(group.key, group);
      if (filter.index === undefined) this.unindexed.add(group);
      for (const value of filter.index?.values ?? []) {
        const key = `${filter.index!.by} ${value}`;
        let groups = this.indexed.get(key);
        if (groups === undefined) this.indexed.set(key, (groups = new Set()));
        groups.add(group);
      }
    }
    const tail = new Tail(group, this);
    group.tails.add(tail);
    return tail;
  }

  /** Files `tail` under nothing any more (Tail.close); its group too once it was the last. */
  unfollow(tail: Tail): void {
    const { group } = tail;
    this.overflowedTails.delete(tail);
    if (!group.tails.delete(tail) || group.tails.size > 0) return;
    this.undelivered.delete(group);
    if (group.key !== undefined) this.shared.delete(group.key);
    this.unindexed.delete(group);
    for (const value of group.filter.index?.values ?? []) {
      const key = `${group.filter.index!.by} ${value}`;
      const groups = this.indexed.get(key);
      groups?.delete(group);
      if (groups?.size === 0) this.indexed.delete(key);
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
