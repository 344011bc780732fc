// The verifier on a log held in memory: each way of tampering with records or checkpoints is
// caught and named, the first thing wrong is what is reported, and record lines must be their
// canonical encoding to the byte.
import { createHash } from "node:crypto";
import { clone, create } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { canonicalJson, GENESIS_HASH, recordHash, sealRecord, type AuditDraft } from "../../src/model/audit-chain.js";
import { parseVerifierKey } from "../../src/audit/signed-note.js";
import { AuditVerifier, verifyLog } from "../../src/audit/verify.js";
import { AuditCheckpointSchema, AuditRecordSchema, type AuditCheckpoint, type AuditRecord } from "../../src/gen/agentmachine/v1/audit_pb.js";
import { buildLog, checkpointOf, newAuditKey, ORIGIN } from "./audit-log-fixture.js";

const key = newAuditKey();
const verifier = parseVerifierKey(key.verifierKey);
const { records, checkpoints } = buildLog(300, 100, key);
const at = (sequence: number) => records[sequence - 1] as AuditRecord;

/** Record `sequence` with `fields` changed, its hash left as it was. */
function edited(sequence: number, fields: Partial<AuditRecord>): AuditRecord {
  return Object.assign(clone(AuditRecordSchema, at(sequence)), fields);
}

/** The log with record `sequence` replaced. */
function replacing(sequence: number, record: AuditRecord): AuditRecord[] {
  return records.map((r) => (r.sequence === BigInt(sequence) ? record : r));
}

/** The log with record `sequence` changed and every record from there on sealed again, as anyone without the signing key could. */
function resealedFrom(sequence: number, fields: Partial<AuditDraft>): AuditRecord[] {
  const out = records.slice(0, sequence - 1);
  for (const original of records.slice(sequence - 1)) {
    const { sequence: _s, previousHash: _p, hash: _h, ...draft } = original;
    out.push(sealRecord(original.sequence === BigInt(sequence) ? { ...draft, ...fields } : draft, out.at(-1)));
  }
  return out;
}

describe("audit log verification", () => {
  it("accepts the untouched log, naming its size, checkpoints and head", async () => {
    expect(await verifyLog(records, checkpoints, verifier)).toEqual({ ok: true, records: 300n, checkpoints: 3, head: at(300).hash });
    expect(await verifyLog([], [], verifier)).toEqual({ ok: true, records: 0n, checkpoints: 0, head: GENESIS_HASH });
  });

  it("accepts a log without checkpoints, saying it has none", async () => {
    expect(await verifyLog(records, [], verifier)).toMatchObject({ ok: true, records: 300n, checkpoints: 0 });
  });

  const rehashed = (record: AuditRecord) => Object.assign(record, { hash: recordHash(record) });
  const otherKey = newAuditKey(ORIGIN);
  const earlierLog = buildLog(100, 100, key, 99);
  const tampered: [string, AuditRecord[], AuditCheckpoint[], string][] = [
    ["a field edited", replacing(150, edited(150, { principal: "mallory" })), checkpoints, "record 150: hash does not match its contents"],
    [
      "a field edited and the record re-hashed",
      replacing(150, rehashed(edited(150, { principal: "mallory" }))),
      checkpoints,
      "record 151: previous_hash does not link to record 150",
    ],
    [
      "a field edited and the chain re-sealed",
      resealedFrom(150, { principal: "mallory" }),
      checkpoints,
      "checkpoint of size 200: head hash does not match record 200",
    ],
    ["a record deleted", records.filter((r) => r.sequence !== 150n), checkpoints, "record 151: out of sequence, expected record 150"],
    [
      "two records reordered",
      records.map((r) => (r.sequence === 150n ? at(151) : r.sequence === 151n ? at(150) : r)),
      checkpoints,
      "record 151: out of sequence, expected record 150",
    ],
    ["a record repeated", [...records.slice(0, 150), at(150), ...records.slice(150)], checkpoints, "record 150: out of sequence, expected record 151"],
    ["the tail cut after a checkpoint", records.slice(0, 250), checkpoints, "log ends at record 250 but a checkpoint covers 300 records (truncated)"],
    [
      "a first record not linked to the genesis hash",
      [sealRecord({ principal: "x" }, { sequence: 0n, hash: "ab".repeat(32) })],
      [],
      "record 1: previous_hash is not the genesis hash",
    ],
    [
      "a checkpoint forged with another key of the same name",
      records,
      checkpoints.map((c) => (c.size === 200n ? checkpointOf(otherKey, at(200)) : c)),
      `checkpoint of size 200: no signature by key ${ORIGIN}+${verifier.keyId.toString("hex")}`,
    ],
    [
      "an old checkpoint of another head replayed in place of one",
      records,
      [earlierLog.checkpoints[0] as AuditCheckpoint, ...checkpoints.slice(1)],
      "checkpoint of size 100: head hash does not match record 100",
    ],
    [
      "an old checkpoint replayed after a later one",
      records,
      [...checkpoints, checkpoints[0] as AuditCheckpoint],
      "checkpoint of size 100: smaller than the checkpoint before it (300)",
    ],
    [
      "a checkpoint's fields edited beside its note",
      records,
      checkpoints.map((c) => (c.size === 200n ? create(AuditCheckpointSchema, { ...c, headHash: at(201).hash }) : c)),
      "checkpoint of size 200: its fields differ from its signed note",
    ],
    [
      "a checkpoint of another origin, signed by the same key",
      records,
      checkpoints.map((c) => (c.size === 200n ? checkpointOf(key, at(200), "elsewhere.example/audit") : c)),
      `checkpoint of size 200: origin "elsewhere.example/audit" is not the log's origin "${ORIGIN}"`,
    ],
  ];
  it.each(tampered)("catches %s, and names it", async (_, log, logCheckpoints, reason) => {
    expect(await verifyLog(log, logCheckpoints, verifier)).toMatchObject({ ok: false, reason });
  });

  it("reports the sequence of the record at fault", async () => {
    expect(await verifyLog(replacing(17, edited(17, { rpc: "/x" })), [], verifier)).toEqual({
      ok: false,
      sequence: 17n,
      reason: "record 17: hash does not match its contents",
    });
  });

  it("reports a checkpoint that comes after the record following the one it covers", () => {
    const log = new AuditVerifier(verifier);
    for (const record of records.slice(0, 150)) expect(log.pushRecord(record)).toBeUndefined();
    expect(log.pushCheckpoint(checkpoints[0] as AuditCheckpoint)).toMatchObject({
      reason: "checkpoint of size 100: comes after record 150, but must come right after record 100",
    });
  });

  it("checks checkpoints given before their records as the records arrive, and keeps the first failure", () => {
    const log = new AuditVerifier(verifier, ORIGIN);
    for (const checkpoint of checkpoints) expect(log.pushCheckpoint(checkpoint)).toBeUndefined();
    for (const record of records.slice(0, 199)) expect(log.pushRecord(record)).toBeUndefined();
    const failure = { ok: false, sequence: 200n, reason: "checkpoint of size 200: head hash does not match record 200" };
    expect(log.pushRecord(resealedFrom(200, { resource: "operations/other" })[199] as AuditRecord)).toEqual(failure);
    expect(log.pushRecord(at(201))).toEqual(failure);
    expect(log.finish()).toEqual(failure);
  });

  it("goes on independently from a snapshot", () => {
    const log = new AuditVerifier(verifier);
    for (const record of records.slice(0, 100)) log.pushRecord(record);
    const snapshot = log.snapshot();
    expect(log.pushRecord(at(102))).toMatchObject({ ok: false });
    expect(snapshot.pushCheckpoint(checkpoints[0] as AuditCheckpoint)).toBeUndefined();
    expect(snapshot.pushRecord(at(101))).toBeUndefined();
    expect(snapshot.finish()).toMatchObject({ ok: true, records: 101n, checkpoints: 1 });
  });

  it("catches any deletion or reordering of records in a log that ends at a checkpoint", async () => {
    const small = buildLog(60, 20, key, 5);
    const index = fc.integer({ min: 0, max: 59 });
    const edit = fc.oneof(
      fc.uniqueArray(index, { minLength: 1, maxLength: 10 }).map((gone) => small.records.filter((_, i) => !gone.includes(i))),
      fc
        .tuple(index, index)
        .filter(([i, j]) => i !== j)
        .map(([i, j]) => small.records.map((r, k) => (k === i ? small.records[j] : k === j ? small.records[i] : r) as AuditRecord)),
    );
    await fc.assert(
      fc.asyncProperty(edit, async (log) => {
        expect((await verifyLog(log, small.checkpoints, verifier)).ok).toBe(false);
      }),
      { numRuns: 300 },
    );
  });
});

describe("a pruned log", () => {
  const kept = records.slice(200);
  const otherKey = newAuditKey(ORIGIN);
  /** Records 1 to 200 with a prune's record after them, sealed on, and a checkpoint of 200 and of the end. */
  const withPrune = (() => {
    const prune = sealRecord(
      { principal: "operator", rpc: "/agentmachine.v1.AuditService/PruneAuditLog", resource: "auditCheckpoints/200", decision: { allowed: true } },
      at(200),
    );
    const next = sealRecord({ principal: "x" }, prune);
    return { records: [prune, next], checkpoints: [checkpoints[1] as AuditCheckpoint, checkpointOf(key, next)] };
  })();

  it("verifies from the checkpoint it starts from, naming it and the record of the prune", async () => {
    expect(await verifyLog(kept, checkpoints.slice(1), verifier)).toEqual({ ok: true, records: 300n, checkpoints: 2, head: at(300).hash, start: 200n });
    // Checkpoints before the start cover only records not in the log: not counted.
    expect(await verifyLog(kept, checkpoints, verifier)).toEqual({ ok: true, records: 300n, checkpoints: 2, head: at(300).hash, start: 200n });
    expect(await verifyLog(withPrune.records, withPrune.checkpoints, verifier)).toMatchObject({ ok: true, records: 202n, start: 200n, pruneRecord: 201n });
  });

  it.each([
    ["without a checkpoint of the size before its first record", records.slice(150), checkpoints, "record 151: out of sequence, expected record 1"],
    [
      "from a checkpoint with another signature",
      kept,
      [checkpointOf(otherKey, at(200)), checkpoints[2] as AuditCheckpoint],
      `checkpoint of size 200: no signature by key ${ORIGIN}+${verifier.keyId.toString("hex")}`,
    ],
    [
      "whose first record does not link to the checkpoint",
      [sealRecord({ principal: "x" }, { sequence: 200n, hash: "ab".repeat(32) })],
      checkpoints.slice(1, 2),
      "record 201: previous_hash does not link to record 200",
    ],
    [
      "whose first record was changed",
      [edited(201, { principal: "mallory" }), ...records.slice(201)],
      checkpoints.slice(1),
      "record 201: hash does not match its contents",
    ],
    ["that is only a checkpoint, its records gone", [], checkpoints.slice(1, 2), "log ends at record 0 but a checkpoint covers 200 records (truncated)"],
  ] as const)("fails %s", async (_, log, logCheckpoints, reason) => {
    expect(await verifyLog(log, logCheckpoints, verifier)).toMatchObject({ ok: false, reason });
  });

  it("goes on from its archive as the whole log, the checkpoint they share counted once", async () => {
    const archive = new AuditVerifier(verifier, ORIGIN);
    expect(await archive.pushLog(records.slice(0, 200), checkpoints.slice(0, 2))).toMatchObject({ ok: true, records: 200n, checkpoints: 2 });
    expect(await archive.pushLog(kept, checkpoints.slice(1))).toEqual({ ok: true, records: 300n, checkpoints: 3, head: at(300).hash });
  });
});

describe("record lines", () => {
  const line = canonicalJson(at(1));
  const push = (text: string) => new AuditVerifier(verifier).pushRecordLine(text, 7);
  const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");
  /** `value` as a record line whose keys are sorted and whose hash holds: what only the schema checks can refuse. */
  const rehash = (value: Record<string, unknown>) => {
    const sorted = (object: Record<string, unknown>) => Object.fromEntries(Object.entries(object).sort(([a], [b]) => (a < b ? -1 : 1)));
    const { hash: _, ...rest } = sorted(value);
    return JSON.stringify(sorted({ ...rest, hash: sha256(JSON.stringify(rest)) }));
  };
  const value = JSON.parse(line) as Record<string, unknown>;

  it("accept the canonical encoding of a record, and nothing else", () => {
    expect(push(line)).toBeUndefined();
    expect(push(rehash(value))).toBeUndefined();
  });

  it("refuse a line that parses to the same record but is not its canonical encoding", () => {
    const cases = [line.replace('{"', '{ "'), `${line} `, line.replace('"rpc":"/', '"rpc":"\\/'), line.replace('"sequence":"1"', '"sequence":"\\u0031"')];
    for (const text of cases) expect(push(text)).toEqual({ ok: false, line: 7, reason: "line 7: not the canonical encoding of a record" });
  });

  it("refuse a line spelling a value another way, as not what was hashed or, hashed anew, as not canonical", () => {
    const time = value.time as string;
    const spellings: Record<string, unknown>[] = [
      { ...value, time: time.replace("Z", "+00:00") },
      { ...value, time: time.replace("Z", "z") },
      { ...value, operationType: 0 },
      { ...value, decision: { ...(value.decision as object), code: "" } },
    ];
    for (const spelling of spellings) {
      expect(push(JSON.stringify(spelling))).toMatchObject({ reason: "line 7: record 1: hash does not match its contents", sequence: 1n });
      expect(push(rehash(spelling))?.reason).toMatch(/^line 7: (not the canonical encoding of a record|not a record \()/);
    }
  });

  it("refuse a line with a field no record has, even hashed", () => {
    expect(push(rehash({ ...value, note: "x" }))?.reason).toMatch(/^line 7: not a record \(.*"note"/);
  });

  it("refuse what is not a JSON object", () => {
    expect(push(line.slice(0, -1))?.reason).toMatch(/^line 7: not a record \(not JSON: /);
    expect(push(`[${line}]`)?.reason).toBe("line 7: not a record (not a JSON object)");
  });
});
