// What both stores keep of the audit log, and how they query it. A record is stored as its
// canonical JSON (src/model/audit-chain.ts: the export line, hash included, so what is read back is
// byte for byte what was hashed) next to the columns ListAuditRecords filters on. Checkpoints
// are stored field by field.
import { create, fromJsonString } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs, timestampNow } from "@bufbuild/protobuf/wkt";
import { AuditCheckpointSchema, AuditRecordSchema, type AuditCheckpoint, type AuditRecord } from "../gen/agentmachine/v1/audit_pb.js";
import { sealRecordWithJson, type AuditDraft, type ChainHead } from "../model/audit-chain.js";
import type { AuditPruneResult, AuditQuery } from "./store.js";

/** The record that follows `head`, with what only the commit knows filled in (see "Audited writes" in store.ts). */
export function sealDraft(draft: AuditDraft, head: ChainHead | undefined, actedOn: string): { record: AuditRecord; json: string } {
  return sealRecordWithJson({ ...draft, time: draft.time ?? timestampNow(), resource: draft.resource || actedOn }, head);
}

/** The columns of a sealed record's row (`json`: its canonical JSON), in the order of the stores' INSERT statements. */
export function auditRowValues({ record, json }: { record: AuditRecord; json: string }): [bigint, number, string, string, number, number, string, string] {
  return [
    record.sequence,
    record.time ? timestampMs(record.time) : 0,
    record.principal,
    record.delegation,
    record.operationType,
    // An integer in both stores: SQLite has no boolean to bind.
    record.decision?.allowed ? 1 : 0,
    record.hash,
    json,
  ];
}

export const AUDIT_COLUMNS = "sequence, time_ms, principal, delegation, operation_type, allowed, hash, record";

export function recordFromRow(row: { record: string }): AuditRecord {
  return fromJsonString(AuditRecordSchema, row.record);
}

/**
 * The SELECT of `query`, with its values passed through `arg` (which returns the dialect's
 * placeholder for each). Scans go in sequence order: no secondary index, so an append costs one
 * primary-key insert, and a filter that matches densely stops early at the limit.
 */
export function auditQuerySql(query: AuditQuery, arg: (value: unknown) => string): string {
  const where = [`sequence > ${arg(query.afterSequence)}`];
  if (query.throughSequence !== undefined) where.push(`sequence <= ${arg(query.throughSequence)}`);
  if (query.principal) where.push(`principal = ${arg(query.principal)}`);
  if (query.delegation) where.push(`delegation = ${arg(query.delegation)}`);
  if (query.operationTypes?.length) where.push(`operation_type IN (${query.operationTypes.map(arg).join(", ")})`);
  if (query.allowed !== undefined) where.push(`allowed = ${arg(query.allowed ? 1 : 0)}`);
  if (query.startTime) where.push(`time_ms >= ${arg(query.startTime.getTime())}`);
  if (query.endTime) where.push(`time_ms < ${arg(query.endTime.getTime())}`);
  return `SELECT record FROM audit_records WHERE ${where.join(" AND ")} ORDER BY sequence LIMIT ${arg(query.limit)}`;
}

export interface CheckpointRow {
  size: bigint;
  origin: string;
  head_hash: string;
  signed_note: string;
  time_ms: bigint | number;
}

export const CHECKPOINT_COLUMNS = "size, origin, head_hash, signed_note, time_ms";

export function checkpointRowValues(checkpoint: AuditCheckpoint): [bigint, string, string, string, number] {
  return [checkpoint.size, checkpoint.origin, checkpoint.headHash, checkpoint.signedNote, checkpoint.time ? timestampMs(checkpoint.time) : 0];
}

export function checkpointFromRow(row: CheckpointRow): AuditCheckpoint {
  return create(AuditCheckpointSchema, {
    size: BigInt(row.size),
    origin: row.origin,
    headHash: row.head_hash,
    signedNote: row.signed_note,
    time: timestampFromMs(Number(row.time_ms)),
  });
}

/**
 * What a prune up to `checkpoint` (undefined: none of that size is stored) comes to before
 * anything is deleted, or undefined when it goes ahead. `covered`: whether any record up to its
 * size is still stored; `signedHash`: the stored hash of the record of its size.
 */
export function pruneOutcome(
  checkpoint: AuditCheckpoint | undefined,
  headHash: string,
  covered: boolean,
  signedHash: string | undefined,
): AuditPruneResult | undefined {
  if (checkpoint === undefined) return { kind: "no-checkpoint" };
  if (checkpoint.headHash !== headHash) return { kind: "head-mismatch", checkpoint };
  if (!covered) return { kind: "pruned", records: 0n, checkpoint };
  if (signedHash !== checkpoint.headHash) return { kind: "log-mismatch", checkpoint };
  return undefined;
}
