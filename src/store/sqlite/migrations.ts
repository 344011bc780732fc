// Versioned schema of the SQLite store. Append new versions; never edit an applied one.
import { REQUEST_KEYS_TABLE } from "../request-keys.js";
import { EVENT_DATA_FORM_COLUMN, EVENT_SELECTION_COLUMNS } from "../event-page.js";
export const migrations: readonly { version: number; sql: string }[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE operations (
        name TEXT PRIMARY KEY,
        request_id TEXT NOT NULL UNIQUE,
        request_digest TEXT NOT NULL,
        type INTEGER NOT NULL,
        state INTEGER NOT NULL,
        profile TEXT NOT NULL,
        labels TEXT NOT NULL,
        data BLOB NOT NULL
      );
      CREATE INDEX operations_state ON operations (state, name);
      CREATE INDEX operations_profile ON operations (profile, name);
      CREATE TABLE profiles (
        name TEXT PRIMARY KEY,
        profile_type INTEGER NOT NULL,
        operation TEXT NOT NULL
      );
      -- AUTOINCREMENT: a sequence is never reused, even after compaction deleted the newest rows.
      CREATE TABLE events (
        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
        operation TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        profile TEXT NOT NULL,
        operation_type INTEGER NOT NULL,
        labels TEXT NOT NULL,
        data BLOB NOT NULL
      );
      CREATE TABLE secrets (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
      );
    `,
  },
  {
    version: 2,
    sql: `
      CREATE TABLE delegations (
        id TEXT PRIMARY KEY,
        parent TEXT,
        expire_ms INTEGER NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0,
        data BLOB NOT NULL
      );
      CREATE INDEX delegations_parent ON delegations (parent);
    `,
  },
  {
    version: 3,
    sql: `
      -- Budget accounts (delegations and profiles): what their operations hold, as a Budget.
      CREATE TABLE budget_accounts (
        account TEXT PRIMARY KEY,
        held BLOB NOT NULL
      );
      ALTER TABLE profiles ADD COLUMN budget BLOB;
      CREATE TABLE policy_bundles (
        profile_type INTEGER NOT NULL,
        version INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (profile_type, version)
      );
      -- Keys of modifications that may happen once (a reported call ticket).
      CREATE TABLE once_keys (
        key TEXT PRIMARY KEY
      );
    `,
  },
  {
    version: 4,
    sql: `
      -- What each active execution holds, and where, until it is settled.
      CREATE TABLE reservations (
        operation TEXT PRIMARY KEY,
        accounts TEXT NOT NULL,
        amount BLOB NOT NULL
      );
    `,
  },
  {
    version: 5,
    sql: `
      -- Runners (one per server process) and when each last said it was alive.
      CREATE TABLE runners (
        id TEXT PRIMARY KEY,
        heartbeat_ms INTEGER NOT NULL
      );
    `,
  },
  {
    version: 6,
    sql: `
      -- The audit log (src/store/audit-rows.ts): each record's canonical JSON, hash included,
      -- and the columns its filters read. Sequences are assigned by the store (head + 1), never
      -- reused; the single writer keeps them gapless.
      CREATE TABLE audit_records (
        sequence INTEGER PRIMARY KEY,
        time_ms INTEGER NOT NULL,
        principal TEXT NOT NULL,
        delegation TEXT NOT NULL,
        operation_type INTEGER NOT NULL,
        allowed INTEGER NOT NULL,
        hash TEXT NOT NULL,
        record TEXT NOT NULL
      );
      -- Signed checkpoints of the log, by the number of records they cover.
      CREATE TABLE audit_checkpoints (
        size INTEGER PRIMARY KEY,
        origin TEXT NOT NULL,
        head_hash TEXT NOT NULL,
        signed_note TEXT NOT NULL,
        time_ms INTEGER NOT NULL
      );
    `,
  },
  {
    version: 7,
    sql: `
      -- Request ids are unique within an idempotency scope (src/lifecycle/idempotency.ts), no
      -- longer across the store. Rows stored before get the scope 'legacy'
      -- (LEGACY_IDEMPOTENCY_SCOPE). SQLite cannot drop a column's UNIQUE: the table is rebuilt.
      CREATE TABLE operations_scoped (
        name TEXT PRIMARY KEY,
        idempotency_scope TEXT NOT NULL,
        request_id TEXT NOT NULL,
        request_digest TEXT NOT NULL,
        type INTEGER NOT NULL,
        state INTEGER NOT NULL,
        profile TEXT NOT NULL,
        labels TEXT NOT NULL,
        data BLOB NOT NULL,
        UNIQUE (idempotency_scope, request_id)
      );
      INSERT INTO operations_scoped (name, idempotency_scope, request_id, request_digest, type, state, profile, labels, data)
        SELECT name, 'legacy', request_id, request_digest, type, state, profile, labels, data FROM operations;
      DROP TABLE operations;
      ALTER TABLE operations_scoped RENAME TO operations;
      CREATE INDEX operations_state ON operations (state, name);
      CREATE INDEX operations_profile ON operations (profile, name);
    `,
  },
  {
    version: 8,
    sql: REQUEST_KEYS_TABLE,
  },
  {
    version: 9,
    sql: `
      -- Execution output (store.ts, OutputAppend): each stream's state, and its bytes as the
      -- appends stored them, by the offset of their first byte.
      CREATE TABLE output_streams (
        operation TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        stream TEXT NOT NULL,
        size INTEGER NOT NULL,
        ended INTEGER NOT NULL,
        truncated INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (operation, attempt, stream)
      );
      CREATE INDEX output_streams_updated ON output_streams (updated_ms);
      CREATE TABLE output_chunks (
        operation TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        stream TEXT NOT NULL,
        start_offset INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (operation, attempt, stream, start_offset)
      );
    `,
  },
  {
    version: 10,
    sql: EVENT_SELECTION_COLUMNS,
  },
  {
    version: 11,
    sql: `
      -- Upstream MCP servers declared through McpUpstreamService (data: the McpUpstream
      -- message), and the one row whose version moves with every change of them.
      CREATE TABLE mcp_upstreams (name TEXT PRIMARY KEY, data BLOB NOT NULL);
      CREATE TABLE mcp_upstream_changes (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
      INSERT INTO mcp_upstream_changes (id, version) VALUES (1, 0);
    `,
  },
  {
    version: 12,
    sql: EVENT_DATA_FORM_COLUMN,
  },
];
