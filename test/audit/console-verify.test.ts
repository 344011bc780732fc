// The console verifies the audit log in the browser with WebCrypto (src/console/audit-verify.ts),
// a second implementation of the rules of src/audit/verify.ts, which needs node:crypto. This
// keeps the two in step: on the same logs, untouched and tampered with in each way, both must
// give the same verdict. (Node's WebCrypto has Ed25519, as the browsers the console runs in do.)
import { clone, create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { recordHash, sealRecord } from "../../src/model/audit-chain.js";
import { parseVerifierKey } from "../../src/audit/signed-note.js";
import { verifyLog } from "../../src/audit/verify.js";
import { verifyAuditLog } from "../../src/console/audit-verify.js";
import { AuditCheckpointSchema, AuditRecordSchema, type AuditCheckpoint, type AuditRecord } from "../../src/gen/agentmachine/v1/audit_pb.js";
import { buildLog, checkpointOf, newAuditKey, ORIGIN } from "./audit-log-fixture.js";

const key = newAuditKey();
const { records, checkpoints } = buildLog(300, 100, key);
const at = (sequence: number) => records[sequence - 1] as AuditRecord;
const last = checkpoints.at(-1) as AuditCheckpoint;

const edited = (sequence: number, fields: Partial<AuditRecord>): AuditRecord => Object.assign(clone(AuditRecordSchema, at(sequence)), fields);
const rehashed = (record: AuditRecord): AuditRecord => Object.assign(record, { hash: recordHash(record) });
const replacing = (sequence: number, record: AuditRecord): AuditRecord[] => records.map((r) => (r.sequence === BigInt(sequence) ? record : r));

/** The chain from record `sequence` on sealed again after an edit, as anyone without the signing key could. */
function resealedFrom(sequence: number): AuditRecord[] {
  const out = records.slice(0, sequence - 1);
  for (const original of records.slice(sequence - 1)) {
    const { sequence: _s, previousHash: _p, hash: _h, ...draft } = original;
    out.push(sealRecord(original.sequence === BigInt(sequence) ? { ...draft, principal: "mallory" } : draft, out.at(-1)));
  }
  return out;
}

const cases: [string, AuditRecord[], AuditCheckpoint, boolean][] = [
  ["the untouched log", records, last, true],
  ["a field edited", replacing(150, edited(150, { principal: "mallory" })), last, false],
  ["a field edited and the record re-hashed", replacing(150, rehashed(edited(150, { principal: "mallory" }))), last, false],
  ["a field edited and the chain re-sealed", resealedFrom(150), last, false],
  ["a record deleted", records.filter((r) => r.sequence !== 150n), last, false],
  ["two records reordered", records.map((r) => (r.sequence === 150n ? at(151) : r.sequence === 151n ? at(150) : r)), last, false],
  ["the tail cut", records.slice(0, 250), last, false],
  ["the checkpoint forged with another key of the same name", records, checkpointOf(newAuditKey(ORIGIN), at(300)), false],
  ["the checkpoint's head edited beside its note", records, create(AuditCheckpointSchema, { ...last, headHash: at(299).hash }), false],
];

describe("the console's audit verifier agrees with amctl audit verify", () => {
  it.each(cases)("%s", async (_, log, checkpoint, ok) => {
    const server = await verifyLog(log, [checkpoint], parseVerifierKey(key.verifierKey));
    const browser = await verifyAuditLog(log, checkpoint, undefined, key.verifierKey);
    expect({ server: server.ok, browser: browser.ok }).toEqual({ server: ok, browser: ok });
  });

  it("verifies a pruned log from the checkpoint it starts at, and catches an edit in it", async () => {
    const retained = records.slice(100);
    expect(await verifyAuditLog(retained, last, checkpoints[0], key.verifierKey)).toMatchObject({ ok: true, records: 300n });
    const tampered = retained.map((r) => (r.sequence === 200n ? edited(200, { rpc: "/x" }) : r));
    expect(await verifyAuditLog(tampered, last, checkpoints[0], key.verifierKey)).toMatchObject({ ok: false });
  });

  it("refuses a verifier key that is not one", async () => {
    expect(await verifyAuditLog(records, last, undefined, "not a key")).toMatchObject({ ok: false });
  });
});
