// Reads the server's SQLite file directly, read-only, as an outside observer: after a crash (to
// see exactly what survived) or next to a running server (WAL lets a reader in). Nothing here
// goes through the server's own store code, so the store cannot vouch for itself.
import { join } from "node:path";
import Database from "better-sqlite3";
import { fromBinary } from "@bufbuild/protobuf";
import { OperationEventSchema, type OperationEvent } from "../../src/gen/agentmachine/v1/event_pb.js";
import { OperationSchema, type Operation } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { SQLITE_FILE } from "../../src/store/sqlite/sqlite-store.js";

export interface StoreSnapshot {
  /** `PRAGMA integrity_check`: "ok" when the file is sound. */
  integrity: string;
  /** Every retained event, in sequence order. */
  events: OperationEvent[];
  /** Every operation, by name. */
  operations: Map<string, { requestId: string; operation: Operation }>;
  /** sqlite_sequence of the events table: the latest sequence ever assigned. */
  latest: bigint;
}

export function storeFile(dataDir: string): string {
  return join(dataDir, SQLITE_FILE);
}

/** Opens the data dir's SQLite file read-only and reads all of it. */
export function readStoreFile(dataDir: string, options: { events?: boolean } = {}): StoreSnapshot {
  const db = new Database(storeFile(dataDir), { readonly: true, fileMustExist: true });
  try {
    db.defaultSafeIntegers(true);
    const integrity = String(db.pragma("integrity_check", { simple: true }));
    // One read transaction, so events and operations are the same moment of a live server.
    return db.transaction(() => {
      const events =
        options.events === false
          ? []
          : (db.prepare("SELECT sequence, data FROM events ORDER BY sequence").all() as { sequence: bigint; data: Uint8Array }[]).map((row) => ({
              ...fromBinary(OperationEventSchema, row.data),
              sequence: row.sequence,
            }));
      const operations = new Map<string, { requestId: string; operation: Operation }>();
      for (const row of db.prepare("SELECT name, request_id, data FROM operations").all() as { name: string; request_id: string; data: Uint8Array }[]) {
        operations.set(row.name, { requestId: row.request_id, operation: fromBinary(OperationSchema, row.data) });
      }
      const latestRow = db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'events'").get() as { seq: bigint } | undefined;
      return { integrity, events, operations, latest: latestRow?.seq ?? 0n };
    })();
  } finally {
    db.close();
  }
}

/** A small seeded PRNG (mulberry32), so that a failing run can be replayed from its seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The latest sequence ever assigned, without reading the rest of the file. */
export function storeLatestSequence(dataDir: string): bigint {
  const db = new Database(storeFile(dataDir), { readonly: true, fileMustExist: true });
  try {
    db.defaultSafeIntegers(true);
    const row = db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'events'").get() as { seq: bigint } | undefined;
    return row?.seq ?? 0n;
  } finally {
    db.close();
  }
}
