// The audit hash chain. Each record holds the hash of the one before it (`previous_hash`) and
// its own `hash`: the SHA-256 of its canonical encoding, which is the RFC 8785 (JCS)
// canonicalization of the record's proto3 JSON form (lowerCamelCase names, enum names, int64s
// as strings, fields at their default left out) with `hash` removed. JSON rather than the
// protobuf binary form so that a verifier needs no protobuf library, only JCS and SHA-256
// (docs/audit.md).
import { createHash } from "node:crypto";
import { create, toJson, type MessageInitShape } from "@bufbuild/protobuf";
import canonicalizeModule from "canonicalize";
import { AuditRecordSchema, type AuditRecord } from "../gen/agentmachine/v1/audit_pb.js";

// The package is CommonJS (`module.exports = serialize`) while its typings declare a default
// export; under NodeNext the default import is module.exports itself.
const canonicalize = canonicalizeModule as unknown as (input: unknown) => string | undefined;

/** RFC 8785 canonical JSON of a JSON value (what the audit log digests a request's JSON by). */
export function canonicalJsonText(value: unknown): string {
  return canonicalize(value) ?? "null";
}

/** The `previous_hash` of the first record. */
export const GENESIS_HASH = "0".repeat(64);

/** The last record of a chain: what the next record links to. */
export interface ChainHead {
  sequence: bigint;
  hash: string;
}

/** A record before it joins the chain: everything but its position and hashes. */
export type AuditDraft = Omit<MessageInitShape<typeof AuditRecordSchema>, "sequence" | "previousHash" | "hash">;

/** The record's JSON form, `hash` included when set: canonical, so it is also the export line. */
export function canonicalJson(record: AuditRecord): string {
  return canonicalize(toJson(AuditRecordSchema, record)) as string;
}

/** The bytes `hash` is computed over: the canonical JSON without `hash`. */
export function canonicalEncoding(record: AuditRecord): string {
  const json = toJson(AuditRecordSchema, record) as Record<string, unknown>;
  delete json.hash;
  return canonicalize(json) as string;
}

export function recordHash(record: AuditRecord): string {
  return createHash("sha256").update(canonicalEncoding(record)).digest("hex");
}

/** The record that follows `head` (undefined: the log is empty), with its hashes. */
export function sealRecord(draft: AuditDraft, head: ChainHead | undefined): AuditRecord {
  return sealRecordWithJson(draft, head).record;
}

/**
 * sealRecord, and the sealed record's canonical JSON (what a store keeps), from one JSON
 * conversion: JCS sorts members, so the canonical form with `hash` is the hashed encoding
 * canonicalized again with the hash added, no second trip through protobuf.
 */
export function sealRecordWithJson(draft: AuditDraft, head: ChainHead | undefined): { record: AuditRecord; json: string } {
  const { $typeName: _, ...fields } = draft;
  const record = create(AuditRecordSchema, {
    ...fields,
    sequence: (head?.sequence ?? 0n) + 1n,
    previousHash: head?.hash ?? GENESIS_HASH,
  });
  const members = toJson(AuditRecordSchema, record) as Record<string, unknown>;
  record.hash = createHash("sha256")
    .update(canonicalize(members) as string)
    .digest("hex");
  return { record, json: canonicalize({ ...members, hash: record.hash }) as string };
}
