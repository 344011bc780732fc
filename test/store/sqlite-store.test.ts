// The SQLite store passes the conformance suite, on a real file, and upgrades files of older schemas.
import { join } from "node:path";
import { toBinary } from "@bufbuild/protobuf";
import Database from "better-sqlite3";
import { it } from "vitest";
import { OperationSchema } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { migrations } from "../../src/store/sqlite/migrations.js";
import { SQLITE_FILE, SqliteStore } from "../../src/store/sqlite/sqlite-store.js";
import { tempDir } from "../helpers/server.js";
import { expectLegacyEventsSelectedAsMaybe, expectLegacyRow, operation, storeConformance } from "./conformance.js";

storeConformance("SQLite", async () => {
  const dir = tempDir("amctl-sqlite-");
  return { store: new SqliteStore(dir), reopen: async () => new SqliteStore(dir) };
});

it("upgrades a file whose request ids were unique across the store: its rows keep working in the legacy scope", async () => {
  const dir = tempDir("amctl-sqlite-");
  const db = new Database(join(dir, SQLITE_FILE));
  db.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)");
  const scoped = migrations.find((migration) => migration.sql.includes("idempotency_scope"))!.version;
  for (const migration of migrations.filter((m) => m.version < scoped)) {
    db.exec(migration.sql);
    db.prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)").run(migration.version, new Date().toISOString());
  }
  const old = operation();
  db.prepare("INSERT INTO operations (name, request_id, request_digest, type, state, profile, labels, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)").run(
    old.name,
    old.requestId,
    "before",
    old.type,
    old.state,
    old.profile,
    JSON.stringify(old.labels),
    toBinary(OperationSchema, old),
  );
  db.close();
  const store = new SqliteStore(dir);
  try {
    await expectLegacyRow(store, old, "before");
  } finally {
    await store.close();
  }
});

it("selects event rows written before the type and state columns as maybe in a typed page", async () => {
  const dir = tempDir("amctl-sqlite-");
  const store = new SqliteStore(dir);
  try {
    await expectLegacyEventsSelectedAsMaybe(store, async () => {
      const db = new Database(join(dir, SQLITE_FILE));
      db.exec("UPDATE events SET event_type = NULL, state = NULL, data_form = 0");
      db.close();
    });
  } finally {
    await store.close();
  }
});
