// Delivery of committed events to one store instance's listeners, in sequence order, without gaps
// or duplicates, whichever replica committed them.
//
// The feed keeps one position: the last sequence it delivered. Everything after it is read from
// the events table ("sequence > position"), which never skips an event: commit order equals
// sequence order (see postgres-store.ts), so when sequence N is visible every smaller one is
// visible too or was given back by a rollback. Reads are triggered by a notification from a
// committing replica, by a periodic poll (a notification can be lost while the listening
// connection is down), and by this instance's own commits. One pass reads at a time; a trigger
// during a pass asks for one more pass after it, so a burst of triggers costs at most two reads.
//
// A commit of this instance whose first event directly follows the position is delivered from
// memory, without a read: the common case with a single writer. Otherwise its writer waits until
// a read has delivered up to its last event, so that a writer is always answered after its own
// events have reached the listeners (the event hub knows a write before its client can watch for
// it).
import type { StoredEvent } from "../store.js";

/** Events read per query. */
const PAGE = 512;

export interface FeedSource {
  /** Committed events with sequence > `after`, in order, at most `limit`. */
  read(after: bigint, limit: number): Promise<StoredEvent[]>;
  /** Hands events to the listeners; called in sequence order, each event once. */
  deliver(events: StoredEvent[]): void;
}

interface Waiter {
  sequence: bigint;
  resolve: () => void;
}

export class EventFeed {
  private last: bigint | undefined;
  private pass: Promise<void> | undefined;
  private nextPass: Promise<void> | undefined;
  private waiters: Waiter[] = [];
  private stopped = false;

  constructor(private readonly source: FeedSource) {}

  /** Starts delivering after `position` (the latest sequence committed when the instance opened). */
  start(position: bigint): void {
    this.last = position;
  }

  /** The last sequence delivered (undefined before start). */
  get position(): bigint | undefined {
    return this.last;
  }

  /** A committing replica announced `sequence`: reads unless it was delivered already. */
  notified(sequence: bigint): void {
    if (this.last !== undefined && sequence > this.last) this.request();
  }

  /**
   * Reads and delivers whatever was committed after the position. A failed read is the
   * source's to handle (its connection reconnects and catches up); a writer waiting for its
   * events waits for that.
   */
  request(): void {
    this.catchUp().catch(() => undefined);
  }

  /**
   * Resolves when a pass that began after this call has delivered everything committed before
   * it began; rejects with the error of a failed read.
   */
  catchUp(): Promise<void> {
    if (this.last === undefined || this.stopped) return Promise.resolve();
    if (this.pass === undefined) {
      this.pass = this.drain().finally(() => (this.pass = undefined));
      return this.pass;
    }
    this.nextPass ??= this.pass
      .catch(() => undefined)
      .then(() => {
        this.nextPass = undefined;
        return this.catchUp();
      });
    return this.nextPass;
  }

  /** This instance committed `events`: resolves once they have been delivered. */
  committed(events: readonly StoredEvent[]): Promise<void> {
    const lastEvent = events[events.length - 1];
    if (lastEvent === undefined || this.last === undefined || this.stopped || lastEvent.event.sequence <= this.last) return Promise.resolve();
    const fresh = events.filter((stored) => stored.event.sequence > this.last!);
    if (fresh[0]!.event.sequence === this.last + 1n) {
      this.deliver(fresh);
      return Promise.resolve();
    }
    const delivered = new Promise<void>((resolve) => this.waiters.push({ sequence: lastEvent.event.sequence, resolve }));
    this.request();
    return delivered;
  }

  /** Delivers nothing more and answers every writer still waiting: the instance is closing. */
  stop(): void {
    this.stopped = true;
    for (const waiter of this.waiters.splice(0)) waiter.resolve();
  }

  private async drain(): Promise<void> {
    for (;;) {
      const events = await this.source.read(this.last!, PAGE);
      if (this.stopped) return;
      // A commit of this instance may have been delivered from memory during the read.
      const fresh = events.filter((stored) => stored.event.sequence > this.last!);
      // A first event beyond position + 1 means compaction removed events before this instance
      // read them (it was disconnected for long): the hub then starts a new window, and a
      // subscriber behind it is told that its cursor was compacted.
      if (fresh.length > 0) this.deliver(fresh);
      if (events.length < PAGE) return;
    }
  }

  private deliver(events: StoredEvent[]): void {
    this.last = events[events.length - 1]!.event.sequence;
    try {
      this.source.deliver(events);
    } catch (error) {
      // A listener's failure is a bug of the listener; it must not stall delivery.
      queueMicrotask(() => {
        throw error;
      });
    }
    if (this.waiters.length === 0) return;
    const waiting: Waiter[] = [];
    for (const waiter of this.waiters) {
      if (waiter.sequence <= this.last) waiter.resolve();
      else waiting.push(waiter);
    }
    this.waiters = waiting;
  }
}
