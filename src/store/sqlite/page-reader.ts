// Replays' history pages are read on a thread of their own (page-thread.mjs), never on the event
// loop. better-sqlite3 reads synchronously, and turning a page's rows into JavaScript values (a
// Buffer per row's data, a BigInt per integer) was more than half of what a replay from the
// store cost the server: read there, it used the second core while the event loop sent the page
// before, and the loop stayed free for every other call meanwhile. The thread answers a page as
// a PackedPage: a few typed arrays and one buffer of every row's data, handed over without
// copying; each event's data is a view of that buffer.
import { Worker } from "node:worker_threads";
import { RowEvent } from "../stored-messages.js";
import type { EventPage } from "../store.js";
import { eventBoundsOf, LATEST_EVENT_SQL, OLDEST_EVENT_SQL, type LatestEventRow, type OldestEventRow } from "./event-bounds.js";

/** A page as the thread packs it: row i's columns at index i; its data is `data` up to dataEnds[i], from the previous row's end. */
interface PackedPage {
  sequences: BigInt64Array;
  operationTypes: Int32Array;
  forms: Uint8Array;
  /** Index in `strings` of row i's profile. */
  profiles: Uint32Array;
  /** Index in `strings` of row i's labels (JSON text). */
  labels: Uint32Array;
  dataEnds: Uint32Array;
  data: Uint8Array;
  /** Each distinct profile and labels text of the page once. */
  strings: string[];
  /** The rows of OLDEST_EVENT_SQL and LATEST_EVENT_SQL (event-bounds.ts) in the page's snapshot. */
  oldestRow: OldestEventRow;
  latestRow: LatestEventRow | undefined;
}

type Answer = { id: number; page: PackedPage; error?: undefined } | { id: number; page?: undefined; error: string };

function unpack(page: PackedPage): EventPage {
  const events: RowEvent[] = new Array(page.sequences.length);
  let start = 0;
  for (let index = 0; index < events.length; index++) {
    const end = page.dataEnds[index]!;
    events[index] = new RowEvent(
      page.sequences[index]!,
      page.strings[page.profiles[index]!]!,
      page.operationTypes[index]!,
      page.strings[page.labels[index]!]!,
      page.data.subarray(start, end),
      page.forms[index]!,
    );
    start = end;
  }
  return { events, oldest: eventBoundsOf(page.oldestRow, page.latestRow).oldest };
}

export interface PageThreadSettings {
  /** The SQLite file. */
  file: string;
  /** How many page statements the thread keeps prepared. */
  statementsKept: number;
}

/**
 * Reads pages on the thread, started at the first page (a store that serves no replay starts
 * none). A thread that fails or exits fails the pages it was reading, and the next page starts
 * a new one.
 */
export class EventPageReader {
  private thread: Worker | undefined;
  private readonly pending = new Map<number, { resolve: (page: EventPage) => void; reject: (error: Error) => void }>();
  private nextId = 0;
  private closed = false;

  constructor(private readonly settings: PageThreadSettings) {}

  /** The page `sql` selects with `values` (src/store/event-page.ts), and the oldest event's sequence then. */
  read(sql: string, values: unknown[]): Promise<EventPage> {
    if (this.closed) return Promise.reject(new Error("the store is closed"));
    const thread = this.thread ?? this.start();
    const id = this.nextId++;
    // A thread reading a page keeps the process alive until it answers; an idle one does not.
    if (this.pending.size === 0) thread.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      thread.postMessage({ id, sql, values });
    });
  }

  private start(): Worker {
    const workerData = { ...this.settings, oldestSql: OLDEST_EVENT_SQL, latestSql: LATEST_EVENT_SQL };
    const thread = new Worker(new URL("./page-thread.mjs", import.meta.url), { workerData });
    thread.on("message", (answer: Answer) => {
      const waiting = this.pending.get(answer.id);
      this.pending.delete(answer.id);
      if (this.pending.size === 0) thread.unref();
      if (answer.error !== undefined) waiting?.reject(new Error(`reading an event page: ${answer.error}`));
      else waiting?.resolve(unpack(answer.page));
    });
    thread.on("error", (error) => this.lose(thread, error));
    thread.on("exit", (code) => this.lose(thread, new Error(`the event page thread exited (code ${code})`)));
    this.thread = thread;
    return thread;
  }

  /** `thread` is gone: the pages it was reading fail. */
  private lose(thread: Worker, error: Error): void {
    if (this.thread !== thread) return;
    this.thread = undefined;
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
  }

  async close(): Promise<void> {
    this.closed = true;
    const thread = this.thread;
    if (thread === undefined) return;
    this.lose(thread, new Error("the store is closed"));
    await thread.terminate();
  }
}
