// The history part of a subscription: the events after a cursor that the live window (the event
// hub's recent events) no longer holds, read from the store in bounded pages with the filter in
// the query (EventSelection, by indexes), each page in its turn of the ReplayScheduler so that
// replays never hold the event loop. It ends where the window takes over: every event up to the
// last page's `through` was considered, the window holds every event after it, and the live tail
// continues from there — no event is lost or repeated at the seam.
import type { EventPage, EventSelection, StoreEvents, StoredEvent } from "../store/store.js";
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
   * events of a page before it was read. The next page is read while the caller sends this one
   * (a store that reads off the event loop, as both do, then reads and sends at once).
   */
  async *pages(window: LiveWindow, after: bigint, selection: EventSelection, signal: AbortSignal): AsyncGenerator<HistoryPage> {
    const { pageEvents: limit } = this.bounds;
    let next = this.read(window, after, selection, signal);
    while (next !== undefined) {
      const read = await next;
      if (read === undefined) return;
      const { page, from, through } = read;
      if (page.oldest > from + 1n) throw eventsCompacted(from, page.oldest);
      // A full page may have stopped short of `through`: the next one starts after its last event.
      const cursor = page.events.length === limit ? page.events[limit - 1]!.event.sequence : through;
      next = this.read(window, cursor, selection, signal);
      yield { events: page.events, through: cursor };
    }
  }

  /** The page after `from` in its turn, with its bounds; undefined when `window` holds every event after `from`. */
  private read(window: LiveWindow, from: bigint, selection: EventSelection, signal: AbortSignal): Promise<PageRead | undefined> | undefined {
    if (window.covers(from)) return undefined;
    const latest = window.latest();
    const span = BigInt(this.bounds.pageSpan);
    const through = from + span < latest ? from + span : latest;
    const reading = this.scheduler
      .run(() => this.store.readEventPage({ ...selection, after: from, through, limit: this.bounds.pageEvents }), signal)
      .then((page) => page && { page, from, through });
    // A replay that ends while its next page is read never awaits it: its failure is no one's.
    reading.catch(() => undefined);
    return reading;
  }
}

interface PageRead {
  page: EventPage;
  from: bigint;
  through: bigint;
}
