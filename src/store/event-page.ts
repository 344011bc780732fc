// One page of event history selected in the query, for replays (src/lifecycle/history-replay.ts):
// the filter runs in the database by indexed columns, and the page is bounded twice — at most
// `limit` events, and no sequence beyond `through` — so one page is bounded work even when no
// index helps (a filter on labels only, a credential that sees every profile).
import type { EventPageQuery } from "./store.js";
import type { Placeholder } from "./statements.js";

/** The columns and indexes replays select by, the same in both dialects: SQLite migration 10 and PostgreSQL migration 7, applied, so never edited. */
export const EVENT_SELECTION_COLUMNS = `
  -- The event's own type and state as columns (NULL in rows written before this version, which a
  -- page selects as "maybe": the reader filters every decoded event exactly), and an index per
  -- filter a replay selects by.
  ALTER TABLE events ADD COLUMN event_type INTEGER;
  ALTER TABLE events ADD COLUMN state INTEGER;
  CREATE INDEX events_profile ON events (profile, sequence);
  CREATE INDEX events_operation ON events (operation, sequence);
  CREATE INDEX events_operation_type ON events (operation_type, sequence);
  CREATE INDEX events_event_type ON events (event_type, sequence);
`;

/** The `data_form` column, the same in both dialects: SQLite migration 12 and PostgreSQL migration 9, applied, so never edited. */
export const EVENT_DATA_FORM_COLUMN = `
  -- How an event row's data was written: 1 (EXACT_EVENT_DATA) when it is exactly the event's
  -- encoding without its sequence, as every row from this version on is, so that a replay can
  -- send it without decoding it; 0 in rows written before, which are decoded to know.
  ALTER TABLE events ADD COLUMN data_form INTEGER NOT NULL DEFAULT 0;
`;

/** How a dialect says that `column` is one of `values`, given `bind`, which binds a value and returns its placeholder. */
export type OneOf = (column: string, values: readonly unknown[], bind: (value: unknown) => string) => string;

export const sqliteOneOf: OneOf = (column, values, bind) => (values.length === 0 ? "1 = 0" : `${column} IN (${values.map(bind).join(", ")})`);
export const postgresOneOf: OneOf = (column, values, bind) => `${column} = ANY(${bind(values)})`;

/** The statement of a page and its values, in a dialect's placeholders and list form. */
export function eventPageStatement(p: Placeholder, oneOf: OneOf, query: EventPageQuery): { sql: string; values: unknown[] } {
  const values: unknown[] = [];
  const bind = (value: unknown): string => {
    values.push(value);
    return p(values.length);
  };
  const where = [`sequence > ${bind(query.after)}`, `sequence <= ${bind(query.through)}`];
  if (query.profiles) where.push(oneOf("profile", query.profiles, bind));
  if (query.operations) where.push(oneOf("operation", query.operations, bind));
  if (query.operationTypes) where.push(oneOf("operation_type", query.operationTypes, bind));
  // Rows written before these columns existed hold NULL: kept, and filtered once decoded.
  if (query.types) where.push(`(event_type IS NULL OR ${oneOf("event_type", query.types, bind)})`);
  if (query.states) where.push(`(state IS NULL OR ${oneOf("state", query.states, bind)})`);
  const sql = `SELECT sequence, profile, operation_type, labels, data, data_form FROM events WHERE ${where.join(" AND ")} ORDER BY sequence LIMIT ${bind(query.limit)}`;
  return { sql, values };
}
