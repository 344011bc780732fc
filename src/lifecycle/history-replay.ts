// The history part of a subscription: the events after a cursor that the live window (the event
// hub's recent events) no longer holds, read from the store in bounded pages with the filter in
// the query (EventSelection, by indexes), each page in its turn of the ReplayScheduler so that
// replays never hold the event loop. It ends where the window takes over: every event up to the
// last page's `through` was considered, the window holds every event after it, and the live tail
// continues from there — no event is lost or repeated at the seam.
import type { EventSelection, StoreEvents, StoredEvent } from "../store/store.js";
import { eventsCompacted } from "./errors.js";
import type { ReplayScheduler } from "../model/replay-scheduler.js";

/** The seam between history and live tail: what the history needs of the live window. */
export interface LiveWindow {
  /** The newest committed sequence. */
  latest(): bigint;
  /** Whether the window holds every committed event after `after` (true when `after` ≥ latest). */
  covers(after: bigint): boolean;
}

export interface HistoryPage {
  /** The events the selection chose, in sequence order, each ≤ `through`. */
  events: StoredEvent[];
  /** Every event with a sequence up to this one was considered: the cursor after this page. */
  through: bigint;
}

/** How big a page may be. */
export interface PageBounds {
  /** At most this many events. */
  pageEvents: number;
  /** At most this many sequences: bounded work even where no index narrows the query. */
  pageSpan: number;
}

export class HistoryReader {
  constructor(
    private readonly store: Pick<StoreEvents, "readEventPage">,
    private readonly scheduler: ReplayScheduler,
    private readonly bounds: PageBounds,
  ) {}

  /**
   * The pages after `after` that `window` does not hold, in order, until it does. Ends early,
   * without a page, when `signal` aborts. OutOfRange (eventsCompacted) when compaction removed
   * events of a page before it was read.
   */
  async *pages(window: LiveWindow, after: bigint, selection: EventSelection, signal: AbortSignal): AsyncGenerator<HistoryPage> {
    const { pageEvents: limit } = this.bounds;
    const span = BigInt(this.bounds.pageSpan);
    let cursor = after;
    while (!window.covers(cursor)) {
      const from = cursor;
      const latest = window.latest();
      const through = from + span < latest ? from + span : latest;
      const page = await this.scheduler.run(() => this.store.readEventPage({ ...selection, after: from, through, limit }), signal);
      if (page === undefined) return;
      if (page.oldest > from + 1n) throw eventsCompacted(from, page.oldest);
      // A full page may have stopped short of `through`: the next one starts after its last event.
      cursor = page.events.length === limit ? page.events[limit - 1]!.event.sequence : through;
      yield { events: page.events, through: cursor };
    }
  }
}
