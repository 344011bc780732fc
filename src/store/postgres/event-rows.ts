// Reading the events table, for the store's readEvents (on the pool) and for the event feed's tail
// (on its own connection), and the channel that appending transactions notify.
import type { QueryResultRow } from "pg";
import type { StoredEvent } from "../store.js";
import { decodeEvent } from "../stored-messages.js";

/** The channel an appending transaction notifies (pg_notify, delivered at commit), with its last sequence as payload. */
export const EVENTS_CHANNEL = "amctl_events";

/** A pool or a single connection. */
export interface Queryable {
  query<R extends QueryResultRow>(sql: string, params?: unknown[]): Promise<{ rows: R[] }>;
}

interface EventRow {
  sequence: bigint;
  profile: string;
  operation_type: number;
  labels: Record<string, string>;
  data: Uint8Array;
}

/** Events with sequence > `after`, in sequence order, at most `limit`. */
export async function selectEvents(db: Queryable, after: bigint, limit: number): Promise<StoredEvent[]> {
  const { rows } = await db.query<EventRow>(
    "SELECT sequence, profile, operation_type, labels, data FROM events WHERE sequence > $1 ORDER BY sequence LIMIT $2",
    [after, limit],
  );
  return rows.map((row) => ({
    event: { ...decodeEvent(row.data), sequence: row.sequence },
    profile: row.profile,
    operationType: row.operation_type,
    labels: row.labels,
  }));
}
