// Fan-out of committed events. The store is the truth: a subscriber is a cursor that reads
// events after its last sequence, from this in-memory window of recent events when it covers
// the cursor, else from the store. So replay and live tail are one loop, with no seam where an
// event could be lost or repeated, and a slow subscriber holds nothing that the writer needs.
import type { StoreEvents, StoredEvent } from "../store/store.js";
import { waitForWakeUp } from "../model/wake-up.js";

export class EventHub {
  private window: StoredEvent[] = [];
  private head: bigint;
  private waiters = new Set<() => void>();

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
    if (newest !== undefined && events[0]!.event.sequence !== newest.event.sequence + 1n) this.window = [];
    this.window.push(...events);
    if (this.window.length > this.windowSize) this.window.splice(0, this.window.length - this.windowSize);
    this.head = events[events.length - 1]!.event.sequence;
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const wake of waiters) wake();
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
