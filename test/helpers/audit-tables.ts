// The audit tables of a stopped server's store, SQLite file or PostgreSQL database, opened
// directly to tamper with them as someone with write access to the store would: rows are read
// and written with plain SQL, their columns filled in as the store fills them
// (src/store/audit-rows.ts), so that only the verifier can tell.
import Database from "better-sqlite3";
import pg from "pg";
import { canonicalJson } from "../../src/model/audit-chain.js";
import type { AuditCheckpoint, AuditRecord } from "../../src/gen/agentmachine/v1/audit_pb.js";
import { AUDIT_COLUMNS, auditRowValues, checkpointFromRow, recordFromRow, type CheckpointRow } from "../../src/store/audit-rows.js";
import { storeFile } from "./store-file.js";

export interface AuditTables {
  /** The record stored in row `sequence`. */
  record(sequence: bigint): Promise<AuditRecord>;
  /** Stores `record` in row `sequence`, whatever the record's own sequence. */
  putRecord(sequence: bigint, record: AuditRecord): Promise<void>;
  /** Deletes the rows from `from` to `to`, both included. */
  deleteRecords(from: bigint, to: bigint): Promise<void>;
  /** Every checkpoint, by size. */
  checkpoints(): Promise<AuditCheckpoint[]>;
  /** Replaces the checkpoint of `size` by `checkpoint` (its time is kept). */
  putCheckpoint(size: bigint, checkpoint: AuditCheckpoint): Promise<void>;
  close(): Promise<void>;
}

/** Runs one statement with `?` placeholders; the rows of a query, none of an update. */
type Run = (sql: string, params: unknown[]) => Promise<Record<string, unknown>[]>;

// Every column of a record row but its key.
const RECORD_SET = AUDIT_COLUMNS.split(", ")
  .slice(1)
  .map((column) => `${column} = ?`)
  .join(", ");

function auditTables(run: Run, close: () => Promise<void>): AuditTables {
  return {
    async record(sequence) {
      const [row] = await run("SELECT record FROM audit_records WHERE sequence = ?", [sequence]);
      if (row === undefined) throw new Error(`no audit record ${sequence}`);
      return recordFromRow(row as { record: string });
    },
    async putRecord(sequence, record) {
      await run(`UPDATE audit_records SET ${RECORD_SET} WHERE sequence = ?`, [...auditRowValues({ record, json: canonicalJson(record) }).slice(1), sequence]);
    },
    async deleteRecords(from, to) {
      await run("DELETE FROM audit_records WHERE sequence >= ? AND sequence <= ?", [from, to]);
    },
    async checkpoints() {
      return (await run("SELECT size, origin, head_hash, signed_note, time_ms FROM audit_checkpoints ORDER BY size", [])).map((row) =>
        checkpointFromRow(row as unknown as CheckpointRow),
      );
    },
    async putCheckpoint(size, checkpoint) {
      await run("UPDATE audit_checkpoints SET size = ?, origin = ?, head_hash = ?, signed_note = ? WHERE size = ?", [
        checkpoint.size,
        checkpoint.origin,
        checkpoint.headHash,
        checkpoint.signedNote,
        size,
      ]);
    },
    close,
  };
}

/** The audit tables of the SQLite store in `dataDir`. */
export function sqliteAuditTables(dataDir: string): AuditTables {
  const db = new Database(storeFile(dataDir), { fileMustExist: true });
  db.defaultSafeIntegers(true);
  const run: Run = async (sql, params) => {
    const statement = db.prepare(sql);
    if (statement.reader) return statement.all(...params) as Record<string, unknown>[];
    statement.run(...params);
    return [];
  };
  return auditTables(run, async () => void db.close());
}

/** The audit tables of the PostgreSQL store at `url`. */
export async function postgresAuditTables(url: string): Promise<AuditTables> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const run: Run = async (sql, params) => {
    let n = 0;
    const values = params.map((value) => (typeof value === "bigint" ? String(value) : value));
    return (
      await client.query(
        sql.replace(/\?/g, () => `$${++n}`),
        values,
      )
    ).rows as Record<string, unknown>[];
  };
  return auditTables(run, () => client.end());
}
