// Verification of the audit log, one record or checkpoint at a time, so that a log of any length
// is checked in constant memory and a caller can keep a snapshot of the state at any point. The
// rules (docs/audit.md):
//   records:     sequences 1, 2, 3, … without gaps or repeats; `hash` is the hash of the record's
//                contents; `previous_hash` is the hash of the record before (GENESIS_HASH first);
//                a record read from text is the exact canonical encoding of what it parses to.
//   checkpoints: the signed note verifies with the given key and states the checkpoint's fields;
//                one origin for all; sizes never decrease; the head is the hash of record `size`.
// A checkpoint must come no later than right after the record it covers, because only the last
// hash is kept. One that covers records not seen yet waits for them; if the log ends first, it
// was cut after that checkpoint was signed.
//   start:       a log whose records were pruned (AuditService.PruneAuditLog) starts right after
//                a signed checkpoint, which comes before its first record: the log is verified
//                from that checkpoint's head, as if its records had been seen. A log that goes
//                on from another (an archive, then what was kept) starts where that one ended.
import { createHash } from "node:crypto";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { AuditRecordSchema, type AuditCheckpoint, type AuditRecord } from "../gen/agentmachine/v1/audit_pb.js";
import { canonicalJson, GENESIS_HASH, recordHash } from "../model/audit-chain.js";
import { isPruneTo } from "../model/audit-retention.js";
import { verifyCheckpointNote, type Checkpoint, type VerifierKey } from "./signed-note.js";

/** The first thing found wrong. `reason` is a whole sentence, starting with where (`line 33: record 17: …`). */
export interface VerifyFailure {
  ok: false;
  reason: string;
  sequence?: bigint;
  line?: number;
}

/** A log that holds together. `checkpoints` counts the checkpoints matched to their record; 0 proves little. */
export interface VerifySuccess {
  ok: true;
  /** The sequence of the last record (the log's size). */
  records: bigint;
  checkpoints: number;
  /** The hash of the last record; GENESIS_HASH for an empty log. */
  head: string;
  /** Set when the log starts from a checkpoint, not at record 1: that checkpoint's size (records up to it are not in the log). */
  start?: bigint;
  /** With `start`: the sequence of the record of the prune that cut the log there, if the log holds it. */
  pruneRecord?: bigint;
}

export type VerifyResult = VerifySuccess | VerifyFailure;

/** Where a failure was found. */
interface Where {
  sequence?: bigint | undefined;
  line?: number | undefined;
}

interface State {
  records: bigint;
  head: string;
  start: bigint | undefined;
  pruneRecord: bigint | undefined;
  origin: string | undefined;
  lastCheckpointSize: bigint | undefined;
  /** The size of the last checkpoint matched to its record: the same one met again (where an archive ends and the rest starts) counts once. */
  lastMatchedSize: bigint | undefined;
  verifiedCheckpoints: number;
  /** Signed checkpoints beyond the last record seen, smallest first. */
  pending: Checkpoint[];
  failure: VerifyFailure | undefined;
}

export class AuditVerifier {
  private state: State;

  /** `origin`, when given, is the origin every checkpoint must have; otherwise the first one sets it. */
  constructor(
    private readonly verifier: VerifierKey,
    origin?: string,
  ) {
    this.state = {
      records: 0n,
      head: GENESIS_HASH,
      start: undefined,
      pruneRecord: undefined,
      origin,
      lastCheckpointSize: undefined,
      lastMatchedSize: undefined,
      verifiedCheckpoints: 0,
      pending: [],
      failure: undefined,
    };
  }

  /** The log's origin, once given or read from a checkpoint. */
  get origin(): string | undefined {
    return this.state.origin;
  }

  /** A copy of the state so far, to go on from here more than once. */
  snapshot(): AuditVerifier {
    const copy = new AuditVerifier(this.verifier);
    copy.state = { ...this.state, pending: [...this.state.pending] };
    return copy;
  }

  /**
   * A record as text: it must be exactly the canonical JSON of the record it parses to. The
   * checks go cheapest first, so that a changed line costs a JSON.parse and one hash, and the
   * protobuf schema is consulted only for lines whose hash holds.
   */
  pushRecordLine(json: string, line: number): VerifyFailure | undefined {
    if (this.state.failure) return this.state.failure;
    let value: unknown;
    try {
      value = JSON.parse(json);
    } catch (error) {
      return this.fail(`not a record (not JSON: ${(error as Error).message})`, { line });
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) return this.fail("not a record (not a JSON object)", { line });
    // Once the line is known to be canonical (next), this is the canonical encoding the hash
    // covers; before, a line with its keys reordered is reported here, as not what was hashed.
    const { hash, ...hashed } = value as Record<string, unknown>;
    const sequence = (value as { sequence?: unknown }).sequence;
    const at = { sequence: typeof sequence === "string" && /^[0-9]{1,20}$/.test(sequence) ? BigInt(sequence) : undefined, line };
    if (hash !== createHash("sha256").update(JSON.stringify(hashed)).digest("hex")) {
      return this.fail(`record ${at.sequence ?? "(no sequence)"}: hash does not match its contents`, at);
    }
    // Otherwise a changed line that parses to the same record (whitespace, another escape,
    // another spelling of a timestamp, a field at its default) would pass.
    if (!isCanonicalJson(value, json)) return this.fail("not the canonical encoding of a record", { line });
    let record: AuditRecord;
    try {
      record = fromJson(AuditRecordSchema, value as JsonValue);
    } catch (error) {
      return this.fail(`not a record (${(error as Error).message})`, { line });
    }
    if (canonicalJson(record) !== json) return this.fail("not the canonical encoding of a record", { line });
    return this.append(record, line);
  }

  pushRecord(record: AuditRecord, line?: number): VerifyFailure | undefined {
    if (this.state.failure) return this.state.failure;
    if (record.hash !== recordHash(record))
      return this.fail(`record ${record.sequence}: hash does not match its contents`, { sequence: record.sequence, line });
    return this.append(record, line);
  }

  /** A checkpoint; its origin, size and head hash must be what its signed note states. */
  pushCheckpoint(checkpoint: AuditCheckpoint, line?: number): VerifyFailure | undefined {
    const state = this.state;
    if (state.failure) return state.failure;
    const at = { line };
    const name = `checkpoint of size ${checkpoint.size}`;
    const signed = verifyCheckpointNote(checkpoint.signedNote, this.verifier);
    if ("error" in signed) return this.fail(`${name}: ${signed.error}`, at);
    if (signed.origin !== checkpoint.origin || signed.size !== checkpoint.size || signed.headHash !== checkpoint.headHash) {
      return this.fail(`${name}: its fields differ from its signed note`, at);
    }
    if (state.origin !== undefined && signed.origin !== state.origin) {
      return this.fail(`${name}: origin ${JSON.stringify(signed.origin)} is not the log's origin ${JSON.stringify(state.origin)}`, at);
    }
    state.origin = signed.origin;
    if (state.lastCheckpointSize !== undefined && signed.size < state.lastCheckpointSize) {
      return this.fail(`${name}: smaller than the checkpoint before it (${state.lastCheckpointSize})`, at);
    }
    state.lastCheckpointSize = signed.size;
    if (signed.size < state.records) {
      return this.fail(`${name}: comes after record ${state.records}, but must come right after record ${signed.size}`, at);
    }
    if (signed.size > state.records) {
      state.pending.push(signed);
      return undefined;
    }
    return this.matchHead(signed, at);
  }

  /** The verdict, once everything was pushed. */
  finish(): VerifyResult {
    const state = this.state;
    if (state.failure) return state.failure;
    const beyond = state.pending[0];
    if (beyond) return this.fail(`log ends at record ${state.records} but a checkpoint covers ${beyond.size} records (truncated)`, {});
    const { start, pruneRecord } = state;
    return {
      ok: true,
      records: state.records,
      checkpoints: state.verifiedCheckpoints,
      head: state.head,
      ...(start !== undefined ? { start } : {}),
      ...(pruneRecord !== undefined ? { pruneRecord } : {}),
    };
  }

  /** Pushes a log held as records and checkpoints (e.g. read from the store), then finishes. */
  async pushLog(records: AsyncIterable<AuditRecord> | Iterable<AuditRecord>, checkpoints: readonly AuditCheckpoint[]): Promise<VerifyResult> {
    for await (const entry of inLogOrder(records, checkpoints)) {
      const failure = "record" in entry ? this.pushRecord(entry.record) : this.pushCheckpoint(entry.checkpoint);
      if (failure) return failure;
    }
    return this.finish();
  }

  /** Adds a record whose hash was checked: it must be the next one and link to the one before. */
  private append(record: AuditRecord, line: number | undefined): VerifyFailure | undefined {
    const state = this.state;
    const at = { sequence: record.sequence, line };
    if (state.records === 0n && record.sequence > 1n) this.startFrom(record.sequence - 1n);
    const expected = state.records + 1n;
    if (record.sequence !== expected) return this.fail(`record ${record.sequence}: out of sequence, expected record ${expected}`, at);
    if (record.previousHash !== state.head) {
      return this.fail(
        `record ${record.sequence}: previous_hash ${expected === 1n ? "is not the genesis hash" : `does not link to record ${state.records}`}`,
        at,
      );
    }
    state.records = record.sequence;
    state.head = record.hash;
    if (state.start !== undefined && state.pruneRecord === undefined && isPruneTo(record, state.start)) state.pruneRecord = record.sequence;
    while (state.pending[0]?.size === state.records) {
      const failure = this.matchHead(state.pending.shift() as Checkpoint, at);
      if (failure) return failure;
    }
    return undefined;
  }

  /**
   * Starts a log that lacks records 1 to `size` from a checkpoint of that size pushed before its
   * first record, if there is one (else the first record is out of sequence). Checkpoints before
   * it cover only records not in the log: their signatures were checked, nothing more can be.
   */
  private startFrom(size: bigint): void {
    const state = this.state;
    const anchor = state.pending.findLast((checkpoint) => checkpoint.size === size);
    if (anchor === undefined) return;
    state.pending = state.pending.filter((checkpoint) => checkpoint.size > size);
    state.start = size;
    state.records = size;
    state.head = anchor.headHash;
    state.lastMatchedSize = size;
    state.verifiedCheckpoints++;
  }

  /** Checks a checkpoint of the size of the log so far against its head. */
  private matchHead(checkpoint: Checkpoint, at: Where): VerifyFailure | undefined {
    if (checkpoint.headHash !== this.state.head) {
      const covered = checkpoint.size === 0n ? "the empty log" : `record ${checkpoint.size}`;
      return this.fail(`checkpoint of size ${checkpoint.size}: head hash does not match ${covered}`, at);
    }
    if (this.state.lastMatchedSize !== checkpoint.size) this.state.verifiedCheckpoints++;
    this.state.lastMatchedSize = checkpoint.size;
    return undefined;
  }

  private fail(message: string, at: Where): VerifyFailure {
    const failure: VerifyFailure = { ok: false, reason: at.line === undefined ? message : `line ${at.line}: ${message}` };
    if (at.sequence !== undefined) failure.sequence = at.sequence;
    if (at.line !== undefined) failure.line = at.line;
    this.state.failure = failure;
    return failure;
  }
}

/**
 * Whether `text` is the RFC 8785 (JCS) form of `value`, its parse: JSON.stringify (whose string
 * and number forms JCS adopts) reproduces it and every object's keys are in sorted order. Exact
 * for objects without integer-like keys, such as records; JavaScript would put those first.
 */
function isCanonicalJson(value: unknown, text: string): boolean {
  return JSON.stringify(value) === text && keysSorted(value);
}

function keysSorted(value: unknown): boolean {
  if (typeof value !== "object" || value === null) return true;
  if (Array.isArray(value)) return value.every(keysSorted);
  const keys = Object.keys(value);
  return keys.every((key, i) => i === 0 || (keys[i - 1] as string) < key) && Object.values(value).every(keysSorted);
}

export type LogEntry = { record: AuditRecord } | { checkpoint: AuditCheckpoint };

/**
 * Records and checkpoints in log order: each checkpoint right after the record its size names,
 * checkpoints in the order given (so that one out of order is reported, not quietly sorted). A
 * checkpoint beyond the last record comes at the end.
 */
export async function* inLogOrder(
  records: AsyncIterable<AuditRecord> | Iterable<AuditRecord>,
  checkpoints: readonly AuditCheckpoint[],
): AsyncGenerator<LogEntry> {
  let next = 0;
  for await (const record of records) {
    for (; next < checkpoints.length && (checkpoints[next] as AuditCheckpoint).size < record.sequence; next++) {
      yield { checkpoint: checkpoints[next] as AuditCheckpoint };
    }
    yield { record };
  }
  for (; next < checkpoints.length; next++) yield { checkpoint: checkpoints[next] as AuditCheckpoint };
}

/** Verifies a log held as records and checkpoints (e.g. read from the store). */
export async function verifyLog(
  records: AsyncIterable<AuditRecord> | Iterable<AuditRecord>,
  checkpoints: readonly AuditCheckpoint[],
  verifier: VerifierKey,
  origin?: string,
): Promise<VerifyResult> {
  return new AuditVerifier(verifier, origin).pushLog(records, checkpoints);
}
