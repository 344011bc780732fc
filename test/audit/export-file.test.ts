// The export file: it round-trips, every line kind and header fault is named by line, and —
// exhaustively — any single-byte change anywhere in a 1,000-record export is reported, at the
// line it changed.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { beforeAll, describe, expect, it } from "vitest";
import { ExportVerifier, readExportFile, verifyExportFile, writeExport } from "../../src/audit/export-file.js";
import { parseVerifierKey, type VerifierKey } from "../../src/audit/signed-note.js";
import { verifyLog, type VerifyResult } from "../../src/audit/verify.js";
import type { AuditCheckpoint, AuditRecord } from "../../src/gen/agentmachine/v1/audit_pb.js";
import { tempDir } from "../helpers/temp-dir.js";
import { buildLog, newAuditKey, ORIGIN } from "./audit-log-fixture.js";

const key = newAuditKey();
const verifier = parseVerifierKey(key.verifierKey);
const dir = tempDir("amctl-audit-export-");

async function exportBytes(records: AuditRecord[], checkpoints: AuditCheckpoint[], header = { origin: ORIGIN, verifierKey: key.verifierKey }): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk);
      done();
    },
  });
  await writeExport(records, checkpoints, header, out);
  return Buffer.concat(chunks);
}

let fileCount = 0;
function verifyText(content: string | Buffer, key: VerifierKey = verifier): Promise<VerifyResult> {
  const file = join(dir, `export-${++fileCount}.jsonl`);
  writeFileSync(file, content);
  return verifyExportFile(file, key);
}

describe("audit export file", () => {
  const { records, checkpoints } = buildLog(250, 50, key);
  let text: string;
  let lines: string[];
  beforeAll(async () => {
    text = (await exportBytes(records, checkpoints)).toString("utf8");
    lines = text.slice(0, -1).split("\n");
  });
  const withLine = (index: number, line: string) => `${[...lines.slice(0, index), line, ...lines.slice(index + 1)].join("\n")}\n`;

  it("puts the header first and each checkpoint right after the record it covers; it verifies like the log it came from", async () => {
    expect(JSON.parse(lines[0] as string)).toEqual({ format: "agentmachine-audit-export/v1", origin: ORIGIN, verifierKey: key.verifierKey });
    expect(lines).toHaveLength(1 + 250 + 5);
    expect(lines[50]).toMatch(/^\{"record":\{.*"sequence":"50"/);
    expect(lines[51]).toBe(`{"checkpoint":${JSON.stringify(checkpoints[0]?.signedNote)}}`);
    const result = await verifyText(text);
    expect(result).toEqual({ ok: true, records: 250n, checkpoints: 5, head: records.at(-1)?.hash });
    expect(result).toEqual(await verifyLog(records, checkpoints, verifier));
  });

  it("names the line of a missing, garbled or foreign header", async () => {
    const otherKey = newAuditKey();
    const cases: [string, string][] = [
      ["", "line 1: missing export header (the file is empty)"],
      [`${lines.slice(1).join("\n")}\n`, "line 1: not an export header of format agentmachine-audit-export/v1"],
      [withLine(0, "{"), "line 1: not an export header (not JSON)"],
      [withLine(0, (lines[0] as string).replace('"origin"', '"origin_"')), "line 1: export header lacks origin or verifierKey"],
      [withLine(0, (lines[0] as string).replace('{"format"', '{ "format"')), "line 1: not the canonical encoding of an export header"],
      [withLine(0, (lines[0] as string).replace("}", ',"note":"x"}')), "line 1: not the canonical encoding of an export header"],
      [
        withLine(0, (lines[0] as string).replace(key.verifierKey, otherKey.verifierKey)),
        `line 1: the header names the verifier key ${otherKey.verifierKey}, not the key given (${key.verifierKey})`,
      ],
    ];
    for (const [content, reason] of cases) expect(await verifyText(content)).toEqual({ ok: false, line: 1, reason });
  });

  it("checks the header's origin against the checkpoints'", async () => {
    const header = { origin: "elsewhere.example/audit", verifierKey: key.verifierKey };
    expect(await verifyText(await exportBytes(records, checkpoints, header))).toMatchObject({
      ok: false,
      line: 52,
      reason: `line 52: checkpoint of size 50: origin "${ORIGIN}" is not the log's origin "elsewhere.example/audit"`,
    });
  });

  it("names the line of an unparseable line, an unknown kind of line and a malformed checkpoint", async () => {
    const note = checkpoints[0]?.signedNote as string;
    const cases: [number, string, string][] = [
      [5, '{"record":{"sequence":"4",}', "line 6: not a record (not JSON: "],
      [5, '{"record":["sequence"]}', "line 6: not a record (not a JSON object)"],
      [5, '{"comment":"hello"}', "line 6: neither a record nor a checkpoint"],
      [5, "", "line 6: neither a record nor a checkpoint"],
      [51, '{"checkpoint":"x}', "line 52: a checkpoint line that is not JSON"],
      [51, `{"checkpoint":{"signedNote":${JSON.stringify(note)}}}`, "line 52: not the canonical encoding of a checkpoint"],
      [51, `{"checkpoint":${JSON.stringify(note.replace("\n\n", "\n"))}}`, "line 52: checkpoint: malformed note: no blank line before the signatures"],
      [
        51,
        `{"checkpoint":${JSON.stringify(note.replace("\n50\n", "\n050\n"))}}`,
        "line 52: checkpoint: malformed checkpoint: the size line is not a decimal number",
      ],
    ];
    for (const [index, line, reason] of cases) {
      const result = await verifyText(withLine(index, line));
      expect(result).toMatchObject({ ok: false, line: index + 1 });
      expect(result.ok === false && result.reason).toContain(reason);
    }
  });

  it("reports a checkpoint signed by another key and a checkpoint line moved later", async () => {
    const forged = (await exportBytes(records, [...checkpoints.slice(0, 2), ...buildLog(150, 50, newAuditKey()).checkpoints.slice(2)])).toString();
    expect(await verifyText(forged)).toMatchObject({
      ok: false,
      line: 154,
      reason: `line 154: checkpoint of size 150: no signature by key ${ORIGIN}+${verifier.keyId.toString("hex")}`,
    });
    const moved = `${[...lines.slice(0, 51), lines[52], lines[51], ...lines.slice(53)].join("\n")}\n`;
    expect(await verifyText(moved)).toMatchObject({
      ok: false,
      line: 53,
      reason: "line 53: checkpoint of size 50: comes after record 51, but must come right after record 50",
    });
  });

  it("of a pruned log starts with its checkpoint, and an archive and the rest verify in turn, as long as they are of one log", async () => {
    const [archive, rest] = [await exportBytes(records.slice(0, 100), checkpoints.slice(0, 2)), await exportBytes(records.slice(100), checkpoints.slice(1))];
    expect(rest.toString("utf8").split("\n")[1]).toBe(`{"checkpoint":${JSON.stringify(checkpoints[1]?.signedNote)}}`);
    expect(await verifyText(rest)).toEqual({ ok: true, records: 250n, checkpoints: 4, head: records.at(-1)?.hash, start: 100n });
    const [archiveFile, restFile] = [join(dir, "archive.jsonl"), join(dir, "rest.jsonl")];
    writeFileSync(archiveFile, archive);
    writeFileSync(restFile, rest);
    const archived = new ExportVerifier(verifier);
    expect(await readExportFile(archiveFile, archived)).toMatchObject({ ok: true, records: 100n, checkpoints: 2 });
    expect(await readExportFile(restFile, new ExportVerifier(verifier, archived.verified))).toEqual({
      ok: true,
      records: 250n,
      checkpoints: 5,
      head: records.at(-1)?.hash,
    });
    // Another log's archive: its origin gives it away before its records do.
    const foreign = new ExportVerifier(verifier);
    foreign.pushLine(JSON.stringify({ format: "agentmachine-audit-export/v1", origin: "elsewhere.example/audit", verifierKey: key.verifierKey }), 1);
    expect(await readExportFile(restFile, new ExportVerifier(verifier, foreign.verified))).toEqual({
      ok: false,
      line: 1,
      reason: `line 1: the export header's origin "${ORIGIN}" is not the origin of the log before it, "elsewhere.example/audit"`,
    });
  });

  it("rejects a file that does not exist", async () => {
    await expect(verifyExportFile(join(dir, "missing.jsonl"), verifier)).rejects.toThrow(/ENOENT/);
  });
});

describe("every single-byte change of a 1,000-record export", () => {
  it("is reported, at the line it changed", async () => {
    const { records, checkpoints } = buildLog(1000, 100, key, 7);
    const file = await exportBytes(records, checkpoints);
    const original = await verifyText(file);
    expect(original).toEqual({ ok: true, records: 1000n, checkpoints: 10, head: records.at(-1)?.hash });
    // The line splitting below is readline's only if no byte is or becomes a carriage return.
    expect(file.includes(0x0d) || file.includes(0x0c)).toBe(false);

    // Line starts, the line of every byte (a newline belongs to the line it ends), and the
    // verifier's state after each line: a mutation of line k is verified from the state after k - 1.
    const starts = [0];
    for (let i = file.indexOf(10); i !== -1 && i + 1 < file.length; i = file.indexOf(10, i + 1)) starts.push(i + 1);
    const lineOf = new Uint32Array(file.length);
    for (const [k, start] of starts.entries()) lineOf.fill(k, start, starts[k + 1] ?? file.length);
    const texts = starts.map((start, k) => file.toString("utf8", start, (starts[k + 1] ?? file.length) - 1));
    const states = [new ExportVerifier(verifier)];
    texts.forEach((text, k) => {
      const state = (states[k] as ExportVerifier).snapshot();
      expect(state.pushLine(text, k + 1)).toBeUndefined();
      states.push(state);
    });

    /** The text of the bytes start..end, with byte `offset` replaced by `value` if it is among them. */
    function lineText(start: number, end: number, offset: number, value: number): string {
      const k = lineOf[start] as number;
      const text = texts[k] as string;
      const original = starts[k] === start && (starts[k + 1] ?? file.length) - 1 === end;
      if (offset < start || offset >= end) return original ? text : file.toString("utf8", start, end);
      // A line of ASCII changed into ASCII: the same text with one character replaced, without decoding.
      if (original && value < 0x80 && text.length === end - start)
        return text.slice(0, offset - start) + String.fromCharCode(value) + text.slice(offset - start + 1);
      const bytes = Buffer.from(file.subarray(start, end));
      bytes[offset - start] = value;
      return bytes.toString("utf8");
    }

    /** Verifies the file with byte `offset` replaced by `value`, re-reading lines from the changed one. */
    function verifyMutated(offset: number, value: number): VerifyResult {
      const k = lineOf[offset] as number;
      const state = (states[k] as ExportVerifier).snapshot();
      for (let start = starts[k] as number, number = k + 1; start < file.length; number++) {
        let end = file.indexOf(10, start);
        if (value === 10 && offset >= start && (end === -1 || offset < end))
          end = offset; // a new line break
        else if (end === offset) end = file.indexOf(10, offset + 1); // a line break removed: two lines merge
        if (end === -1) end = file.length;
        const failure = state.pushLine(lineText(start, end, offset, value), number);
        if (failure) return failure;
        start = end + 1;
      }
      return state.finish();
    }

    // Where a change must be reported: on its line, except for the header's origin, which is
    // first checked at the first checkpoint.
    const header = file.toString("utf8", 0, (starts[1] as number) - 1);
    const valueAt = (key: string, value: string) => {
      const from = header.indexOf(`"${key}":"${value}"`) + key.length + 4;
      return { from, to: from + value.length };
    };
    const origin = valueAt("origin", ORIGIN);
    const firstCheckpointLine = (lineOf[file.indexOf('{"checkpoint":')] as number) + 1;
    const expectedLine = (offset: number) => (offset >= origin.from && offset < origin.to ? firstCheckpointLine : (lineOf[offset] as number) + 1);

    const undetected: number[] = [];
    const misplaced: string[] = [];
    for (let offset = 0; offset < file.length; offset++) {
      const value = (file[offset] as number) ^ 0x01;
      const result = verifyMutated(offset, value);
      if (result.ok) undetected.push(offset);
      else if (result.line !== expectedLine(offset)) misplaced.push(`byte ${offset} (line ${(lineOf[offset] as number) + 1}) reported as: ${result.reason}`);
    }
    expect(undetected).toEqual([]);
    expect(misplaced).toEqual([]);

    // The incremental verification above is the whole-file one: spot-check a spread of offsets,
    // among them a line break, a checkpoint line and the header.
    const samples = [
      0,
      40,
      (starts[1] as number) - 1,
      file.indexOf('{"checkpoint":') + 20,
      file.length - 1,
      ...Array.from({ length: 5 }, (_, i) => Math.floor((file.length * (i + 0.5)) / 5)),
    ];
    for (const offset of samples) {
      const mutated = Buffer.from(file);
      mutated[offset] = (file[offset] as number) ^ 0x01;
      expect(await verifyText(mutated)).toEqual(verifyMutated(offset, mutated[offset] as number));
    }
  }, 120_000);
});
