// Reading the events table, for the store's readEvents, readEventPage and eventBounds (on the
// pool) and for the event feed's tail (on its own connection), and the channel that appending
// transactions notify.
import type { QueryResultRow } from "pg";
import { eventFromRow, pageEventFromRow, type EventRow } from "../operation-rows.js";
import { postgresPlaceholder, statements } from "../statements.js";
import { eventPageStatement, postgresOneOf } from "../event-page.js";
import type { EventBounds, EventPage, EventPageQuery, StoredEvent } from "../store.js";

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

const BOUNDS_SQL = "SELECT (SELECT value FROM event_counter) AS latest, (SELECT MIN(sequence) FROM events) AS oldest";

interface BoundsRow {
  latest: bigint;
  oldest: bigint | null;
}

function boundsOf({ latest, oldest }: BoundsRow): EventBounds {
  return { oldest: oldest ?? latest + 1n, latest };
}

/** The oldest and newest sequence, in one statement: one snapshot, so of the same moment. */
export async function selectEventBounds(db: Queryable): Promise<EventBounds> {
  const { rows } = await db.query<BoundsRow>(BOUNDS_SQL);
  return boundsOf(rows[0]!);
}

/**
 * One page of history with the bounds of the moment it was read, in one statement. The bounds'
 * one row joined to the page's rows: an empty page leaves that row alone, its page columns NULL.
 */
export async function selectEventPage(db: Queryable, query: EventPageQuery): Promise<EventPage> {
  const page = eventPageStatement(postgresPlaceholder, postgresOneOf, query);
  const { rows } = await db.query<BoundsRow & EventRow>(
    `SELECT bounds.*, page.* FROM (${BOUNDS_SQL}) bounds LEFT JOIN (${page.sql}) page ON true ORDER BY page.sequence`,
    page.values,
  );
  return { events: rows.filter((row) => row.sequence !== null).map(pageEventFromRow), oldest: boundsOf(rows[0]!).oldest };
}
