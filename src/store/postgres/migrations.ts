// Versioned schema of the PostgreSQL store. Append new versions; never edit an applied one.
// Every replica runs `migrate` at start; a session-level advisory lock makes them take turns, so
// two replicas starting together never apply the same version twice or see a half-made schema.
import { REQUEST_KEYS_TABLE } from "../request-keys.js";
import { EVENT_DATA_FORM_COLUMN, EVENT_SELECTION_COLUMNS } from "../event-page.js";
import type { Pool } from "pg";
import { checkout } from "./checkout.js";

export const migrations: readonly { version: number; sql: string }[] = [
  {
    version: 1,
    sql: `
      -- Names sort byte by byte (COLLATE "C"), whatever the database's locale: pages and
      -- "newest first" follow the time-ordered ids exactly as in the SQLite store.
      CREATE TABLE operations (
        name TEXT COLLATE "C" PRIMARY KEY,
        request_id TEXT NOT NULL CONSTRAINT operations_request_id_unique UNIQUE,
        request_digest TEXT NOT NULL,
        type INTEGER NOT NULL,
        state INTEGER NOT NULL,
        profile TEXT COLLATE "C" NOT NULL,
        labels JSONB NOT NULL,
        data BYTEA NOT NULL
      );
      CREATE INDEX operations_state ON operations (state, name);
      CREATE INDEX operations_profile ON operations (profile, name);
      CREATE INDEX operations_labels ON operations USING GIN (labels jsonb_path_ops);
      CREATE TABLE profiles (
        name TEXT COLLATE "C" PRIMARY KEY,
        profile_type INTEGER NOT NULL,
        operation TEXT NOT NULL,
        budget BYTEA
      );
      -- Sequences come from event_counter (see appendEvent in postgres-store.ts), never from a
      -- SEQUENCE: a SEQUENCE hands out numbers outside the transaction, so a later number could
      -- commit before an earlier one and a reader tailing "sequence > last" would skip it.
      CREATE TABLE events (
        sequence BIGINT PRIMARY KEY,
        operation TEXT NOT NULL,
        time_ms BIGINT NOT NULL,
        profile TEXT NOT NULL,
        operation_type INTEGER NOT NULL,
        labels JSONB NOT NULL,
        data BYTEA NOT NULL
      );
      CREATE INDEX events_time ON events (time_ms);
      -- One row: the latest sequence ever assigned. It only grows, so compaction never lets a
      -- sequence be reused.
      CREATE TABLE event_counter (
        id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
        value BIGINT NOT NULL
      );
      INSERT INTO event_counter (id, value) VALUES (TRUE, 0);
      CREATE TABLE secrets (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
      );
      CREATE TABLE delegations (
        id TEXT COLLATE "C" PRIMARY KEY,
        parent TEXT COLLATE "C",
        expire_ms BIGINT NOT NULL,
        revoked BOOLEAN NOT NULL DEFAULT FALSE,
        data BYTEA NOT NULL
      );
      CREATE INDEX delegations_parent ON delegations (parent);
      -- Budget accounts (delegations and profiles): what their operations hold, as a Budget.
      -- A row is created (empty) the first time an account is locked.
      CREATE TABLE budget_accounts (
        account TEXT COLLATE "C" PRIMARY KEY,
        held BYTEA NOT NULL DEFAULT ''::BYTEA
      );
      CREATE TABLE policy_bundles (
        profile_type INTEGER NOT NULL,
        version BIGINT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (profile_type, version)
      );
      -- What each active execution holds, and where, until it is settled.
      CREATE TABLE reservations (
        operation TEXT COLLATE "C" PRIMARY KEY,
        accounts TEXT[] NOT NULL,
        amount BYTEA NOT NULL
      );
      -- Keys of modifications that may happen once (a reported call ticket).
      CREATE TABLE once_keys (
        key TEXT PRIMARY KEY
      );
    `,
  },
  {
    version: 2,
    sql: `
      -- Runners (one per server process) and when each last said it was alive.
      CREATE TABLE runners (
        id TEXT PRIMARY KEY,
        heartbeat_ms BIGINT NOT NULL
      );
    `,
  },
  {
    version: 3,
    sql: `
      -- The audit log (src/store/audit-rows.ts): each record's canonical JSON, hash included,
      -- and the columns its filters read.
      CREATE TABLE audit_records (
        sequence BIGINT PRIMARY KEY,
        time_ms BIGINT NOT NULL,
        principal TEXT NOT NULL,
        delegation TEXT NOT NULL,
        operation_type INTEGER NOT NULL,
        allowed SMALLINT NOT NULL,
        hash TEXT NOT NULL,
        record TEXT NOT NULL
      );
      -- One row: the newest record's sequence and hash (0 and '' while the log is empty). An
      -- append locks it (SELECT … FOR UPDATE) until its transaction ends, so appends by any
      -- number of replicas are serialized: each links to the record committed before it, and
      -- the chain never forks.
      CREATE TABLE audit_head (
        id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
        sequence BIGINT NOT NULL,
        hash TEXT NOT NULL
      );
      INSERT INTO audit_head (id, sequence, hash) VALUES (TRUE, 0, '');
      -- Signed checkpoints of the log, by the number of records they cover.
      CREATE TABLE audit_checkpoints (
        size BIGINT PRIMARY KEY,
        origin TEXT NOT NULL,
        head_hash TEXT NOT NULL,
        signed_note TEXT NOT NULL,
        time_ms BIGINT NOT NULL
      );
    `,
  },
  {
    version: 4,
    sql: `
      -- Request ids are unique within an idempotency scope (src/lifecycle/idempotency.ts), no
      -- longer across the store. Rows stored before get the scope 'legacy'
      -- (LEGACY_IDEMPOTENCY_SCOPE); new rows always name theirs.
      ALTER TABLE operations ADD COLUMN idempotency_scope TEXT NOT NULL DEFAULT 'legacy';
      ALTER TABLE operations ALTER COLUMN idempotency_scope DROP DEFAULT;
      ALTER TABLE operations DROP CONSTRAINT operations_request_id_unique;
      ALTER TABLE operations ADD CONSTRAINT operations_request_key_unique UNIQUE (idempotency_scope, request_id);
    `,
  },
  {
    version: 5,
    sql: REQUEST_KEYS_TABLE,
  },
  {
    version: 6,
    sql: `
      -- Execution output (store.ts, OutputAppend): each stream's state, and its bytes as the
      -- appends stored them, by the offset of their first byte. An append locks its stream's
      -- row, so the replicas' appends to one stream are serialized.
      CREATE TABLE output_streams (
        operation TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        stream TEXT NOT NULL,
        size BIGINT NOT NULL,
        ended BOOLEAN NOT NULL,
        truncated BOOLEAN NOT NULL,
        updated_ms BIGINT NOT NULL,
        CONSTRAINT output_streams_pkey PRIMARY KEY (operation, attempt, stream)
      );
      CREATE INDEX output_streams_updated ON output_streams (updated_ms);
      CREATE TABLE output_chunks (
        operation TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        stream TEXT NOT NULL,
        start_offset BIGINT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (operation, attempt, stream, start_offset)
      );
    `,
  },
  {
    version: 7,
    sql: EVENT_SELECTION_COLUMNS,
  },
  {
    version: 8,
    sql: `
      -- Upstream MCP servers declared through McpUpstreamService (data: the McpUpstream
      -- message; names compared byte by byte, as SQLite and the page tokens do), and the one row
      -- whose version moves with every change of them, which every replica reads.
      CREATE TABLE mcp_upstreams (name TEXT COLLATE "C" PRIMARY KEY, data BYTEA NOT NULL);
      CREATE TABLE mcp_upstream_changes (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);
      INSERT INTO mcp_upstream_changes (id, version) VALUES (1, 0);
    `,
  },
  {
    version: 9,
    sql: EVENT_DATA_FORM_COLUMN,
  },
];

/** Key of the session-level advisory lock that serializes migrations across replicas. */
export const MIGRATION_LOCK_KEY = 0x616d63746c5f6d67n; // "amctl_mg"

/** Applies the missing migrations, each in its own transaction, holding the migration lock. */
export async function migrate(pool: Pool): Promise<void> {
  const { client, release } = await checkout(pool);
  let broken: Error | undefined;
  try {
    await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
    try {
      await client.query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)");
      const { rows } = await client.query<{ version: number }>("SELECT version FROM schema_migrations");
      const applied = new Set(rows.map((row) => row.version));
      for (const migration of migrations) {
        if (applied.has(migration.version)) continue;
        await client.query("BEGIN");
        try {
          await client.query(migration.sql);
          await client.query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())", [migration.version]);
          await client.query("COMMIT");
        } catch (error) {
          await client.query("ROLLBACK").catch(() => undefined);
          throw error;
        }
      }
    } finally {
      await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]).catch((error: Error) => {
        // A session that cannot unlock is closed below, which releases its lock.
        broken = error;
      });
    }
  } catch (error) {
    broken ??= error as Error;
    throw error;
  } finally {
    release(broken);
  }
}
