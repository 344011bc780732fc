// The oldest retained and newest written event sequences of the SQLite file, as the store reads
// them on its connection and the page thread on its own (page-thread.mjs, which runs these
// statements and sends their rows): one reading of the two rows for both.
import type { EventBounds } from "../store.js";

export const OLDEST_EVENT_SQL = "SELECT MIN(sequence) AS oldest FROM events";
/** The newest sequence ever given (AUTOINCREMENT's), which compaction does not lower. */
export const LATEST_EVENT_SQL = "SELECT seq FROM sqlite_sequence WHERE name = 'events'";

export interface OldestEventRow {
  oldest: bigint | null;
}

export interface LatestEventRow {
  seq: bigint;
}

/** The bounds the two statements' rows give: with no event retained, `oldest` is just after `latest`. */
export function eventBoundsOf(oldestRow: OldestEventRow, latestRow: LatestEventRow | undefined): EventBounds {
  const latest = latestRow === undefined ? 0n : BigInt(latestRow.seq);
  return { oldest: oldestRow.oldest === null ? latest + 1n : BigInt(oldestRow.oldest), latest };
}
