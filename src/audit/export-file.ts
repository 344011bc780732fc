// The portable export of the audit log: UTF-8 JSON lines, each the RFC 8785 (JCS) canonical
// form of an object with one key (the header has three), so that a verifier can demand every line
// byte for byte and any edit of the file is reported:
//
//   {"format":"agentmachine-audit-export/v1","origin":"…","verifierKey":"…"}
//   {"record":<canonicalJson(record), hash included>}
//   {"checkpoint":"<the signed note>"}          right after the record its size names
//
// A checkpoint line holds only its signed note: the origin, size and head hash are in the note,
// and the time it was signed is left out because no signature covers it. The header's key is
// informational: whoever edits a file can re-sign it with a key of their own and name that key
// in the header, so verification uses a key given separately and only checks that the header
// names the same one. Nothing unsigned and unchecked is in the file (no export time, say): every
// byte of it is covered by a signature or a check.
//
// The export of a pruned log, and an archive (`amctl audit prune`) after the first, starts with
// the checkpoint it starts from (src/audit/verify.ts), then the records after it. Archives are
// verified in order, each going on from the one before, and then the log that was kept.
import { once } from "node:events";
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import type { Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { AuditCheckpointSchema, type AuditCheckpoint, type AuditRecord } from "../gen/agentmachine/v1/audit_pb.js";
import { canonicalJson } from "../model/audit-chain.js";
import { unverifiedCheckpoint, type VerifierKey } from "./signed-note.js";
import { AuditVerifier, inLogOrder, type VerifyFailure, type VerifyResult } from "./verify.js";

export const EXPORT_FORMAT = "agentmachine-audit-export/v1";

export interface ExportHeader {
  /** The log's origin, as in its checkpoints. */
  origin: string;
  /** The verifier key of the key that signed the checkpoints. */
  verifierKey: string;
}

const RECORD = '{"record":';
const CHECKPOINT = '{"checkpoint":';

function headerLine(header: ExportHeader): string {
  // Keys in sorted order and string values only: JSON.stringify gives the JCS form.
  const { origin, verifierKey } = header;
  return JSON.stringify({ format: EXPORT_FORMAT, origin, verifierKey });
}

function checkpointLine(signedNote: string): string {
  // JCS serializes strings as JSON.stringify does.
  return `${CHECKPOINT}${JSON.stringify(signedNote)}}`;
}

/**
 * Writes the header, then the records and checkpoints in log order, one a line; waits when `out`
 * is full. `checkpoints` in the order they were signed. Does not end `out`.
 */
export async function writeExport(
  records: AsyncIterable<AuditRecord> | Iterable<AuditRecord>,
  checkpoints: readonly AuditCheckpoint[],
  header: ExportHeader,
  out: Writable,
): Promise<void> {
  const write = async (line: string) => {
    if (!out.write(`${line}\n`)) await once(out, "drain");
  };
  await write(headerLine(header));
  for await (const entry of inLogOrder(records, checkpoints)) {
    await write("record" in entry ? `${RECORD}${canonicalJson(entry.record)}}` : checkpointLine(entry.checkpoint.signedNote));
  }
}

/** The header of line 1, or what is wrong with it. */
function readHeader(line: string, verifier: VerifierKey): ExportHeader | string {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return "not an export header (not JSON)";
  }
  const { format, origin, verifierKey } = (typeof value === "object" && value !== null ? value : {}) as Record<string, unknown>;
  if (format !== EXPORT_FORMAT) return `not an export header of format ${EXPORT_FORMAT}`;
  if (typeof origin !== "string" || typeof verifierKey !== "string") return "export header lacks origin or verifierKey";
  const header = { origin, verifierKey };
  if (headerLine(header) !== line) return "not the canonical encoding of an export header";
  if (verifierKey !== verifier.text) return `the header names the verifier key ${verifierKey}, not the key given (${verifier.text})`;
  return header;
}

/** Verifies an export line by line; `snapshot` lets a caller go on from any line more than once. */
export class ExportVerifier {
  /** The log's verifier, once the header was read. */
  private log: AuditVerifier | undefined;
  private failure: VerifyFailure | undefined;

  /** With `before`, the file goes on from the log verified so far (the archives before it), and pushes to it. */
  constructor(
    private readonly verifier: VerifierKey,
    private readonly before?: AuditVerifier,
  ) {}

  /** The log so far, once the header was read: what a following file or log goes on from. */
  get verified(): AuditVerifier | undefined {
    return this.log;
  }

  snapshot(): ExportVerifier {
    const copy = new ExportVerifier(this.verifier, this.before?.snapshot());
    copy.log = this.log?.snapshot();
    copy.failure = this.failure;
    return copy;
  }

  /** Line `number` (from 1) of the file, without its newline. */
  pushLine(line: string, number: number): VerifyFailure | undefined {
    if (this.failure) return this.failure;
    if (this.log === undefined) {
      const header = readHeader(line, this.verifier);
      if (typeof header === "string") return this.fail(number, header);
      const origin = this.before?.origin;
      if (origin !== undefined && header.origin !== origin) {
        return this.fail(
          number,
          `the export header's origin ${JSON.stringify(header.origin)} is not the origin of the log before it, ${JSON.stringify(origin)}`,
        );
      }
      this.log = this.before ?? new AuditVerifier(this.verifier, header.origin);
      return undefined;
    }
    if (line.startsWith(RECORD) && line.endsWith("}")) return this.log.pushRecordLine(line.slice(RECORD.length, -1), number);
    if (line.startsWith(CHECKPOINT) && line.endsWith("}")) return this.pushCheckpointLine(line, number, this.log);
    return this.fail(number, "neither a record nor a checkpoint");
  }

  finish(): VerifyResult {
    if (this.failure) return this.failure;
    return this.log?.finish() ?? this.fail(1, "missing export header (the file is empty)");
  }

  private pushCheckpointLine(line: string, number: number, log: AuditVerifier): VerifyFailure | undefined {
    let note: unknown;
    try {
      note = JSON.parse(line.slice(CHECKPOINT.length, -1));
    } catch {
      return this.fail(number, "a checkpoint line that is not JSON");
    }
    if (typeof note !== "string" || checkpointLine(note) !== line) return this.fail(number, "not the canonical encoding of a checkpoint");
    // Only to name the checkpoint and fill in its fields: pushCheckpoint verifies the note.
    const claimed = unverifiedCheckpoint(note);
    if ("error" in claimed) return this.fail(number, `checkpoint: ${claimed.error}`);
    return log.pushCheckpoint(create(AuditCheckpointSchema, { ...claimed, signedNote: note }), number);
  }

  private fail(line: number, message: string): VerifyFailure {
    this.failure = { ok: false, reason: `line ${line}: ${message}`, line };
    return this.failure;
  }
}

/** Pushes the lines of the file at `path`, read a line at a time, until one fails; returns `exported` finished. */
export async function readExportFile(path: string, exported: ExportVerifier): Promise<VerifyResult> {
  const input = createReadStream(path, { encoding: "utf8" });
  let number = 0;
  try {
    for await (const line of createInterface({ input, crlfDelay: Infinity })) {
      if (exported.pushLine(line, ++number)) break;
    }
  } finally {
    input.destroy();
  }
  return exported.finish();
}

/** Verifies the export file at `path`. */
export function verifyExportFile(path: string, verifier: VerifierKey): Promise<VerifyResult> {
  return readExportFile(path, new ExportVerifier(verifier));
}
