// Reading the events table, for the store's readEvents (on the pool) and for the event feed's tail
// (on its own connection), and the channel that appending transactions notify.
import type { QueryResultRow } from "pg";
import { eventFromRow, type EventRow } from "../operation-rows.js";
import { postgresPlaceholder, statements } from "../statements.js";
import type { StoredEvent } from "../store.js";

/** The channel an appending transaction notifies (pg_notify, delivered at commit), with its last sequence as payload. */
export const EVENTS_CHANNEL = "amctl_events";

/** A pool or a single connection. */
export interface Queryable {
  query<R extends QueryResultRow>(sql: string, params?: unknown[]): Promise<{ rows: R[] }>;
}

/** Events with sequence > `after`, in sequence order, at most `limit`. */
export async function selectEvents(db: Queryable, after: bigint, limit: number): Promise<StoredEvent[]> {
  const { rows } = await db.query<EventRow>(statements(postgresPlaceholder).readEvents, [after, limit]);
  return rows.map(eventFromRow);
}
