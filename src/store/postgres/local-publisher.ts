// Publication of this store instance's own commits, in sequence order.
//
// A transaction that appends an event takes its sequence from the event counter row and holds
// that row's lock until it ends, so on the server a smaller sequence always commits (or rolls
// back) before a larger one is handed out. The acknowledgements of two transactions travel on
// two connections, though, and may be seen here in either order. So each transaction registers
// its first sequence as soon as it has one, and a committed transaction's events are handed to
// the listeners only once every transaction registered with a smaller (or equal: a rolled-back
// transaction's sequence is handed out again) sequence has ended.
import type { StoredEvent } from "../store.js";

interface Entry {
  sequence: bigint;
  order: number;
  /** undefined while the transaction runs; then its committed events, or null if it rolled back. */
  outcome: StoredEvent[] | null | undefined;
  done: () => void;
  finished: Promise<void>;
}

export class LocalPublisher {
  private pending: Entry[] = [];
  private registered = 0;

  constructor(private readonly deliver: (events: StoredEvent[]) => void) {}

  /** Called inside the transaction as soon as its first sequence is known. */
  register(sequence: bigint): Entry {
    let done!: () => void;
    const finished = new Promise<void>((resolve) => (done = resolve));
    const entry: Entry = { sequence, order: this.registered++, outcome: undefined, done, finished };
    this.pending.push(entry);
    return entry;
  }

  /**
   * The transaction ended: `events` committed, or `null` when it rolled back. Resolves when its
   * events (if any) were delivered, so a writer is answered after its events are published.
   */
  settle(entry: Entry, events: StoredEvent[] | null): Promise<void> {
    entry.outcome = events;
    this.flush();
    return entry.finished;
  }

  private flush(): void {
    for (;;) {
      let first: Entry | undefined;
      for (const entry of this.pending) {
        if (first === undefined || entry.sequence < first.sequence || (entry.sequence === first.sequence && entry.order < first.order)) first = entry;
      }
      if (first === undefined || first.outcome === undefined) return;
      this.pending.splice(this.pending.indexOf(first), 1);
      const events = first.outcome;
      if (events !== null && events.length > 0) {
        try {
          this.deliver(events);
        } catch (error) {
          // A listener's failure is a bug of the listener; it must not stall publication.
          queueMicrotask(() => {
            throw error;
          });
        }
      }
      first.done();
    }
  }
}

export type PublishEntry = ReturnType<LocalPublisher["register"]>;
