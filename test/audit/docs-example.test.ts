// The worked example in docs/audit.md is a valid export: its records hash and link as the text
// says, and its checkpoint verifies with the verifier key shown; the docs cannot drift from the code.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { fromJson } from "@bufbuild/protobuf";
import { ExportVerifier } from "../../src/audit/export-file.js";
import { AuditRecordSchema } from "../../src/gen/agentmachine/v1/audit_pb.js";
import { gates } from "../../src/model/policy-gates.js";
import { parseVerifierKey, verifyCheckpointNote } from "../../src/audit/signed-note.js";
import { repoRoot } from "../helpers/temp-dir.js";

const docs = readFileSync(join(repoRoot, "docs", "audit.md"), "utf8");
const block = (language: string, index = 0) => [...docs.matchAll(new RegExp(`\`\`\`${language}\\n([\\s\\S]*?)\`\`\``, "g"))][index]?.[1] ?? "";

describe("docs/audit.md", () => {
  const verifier = parseVerifierKey(block("text", 1).trim());
  const exportLines = block("jsonl").trimEnd().split("\n");

  it("shows an export that verifies with the verifier key it shows", () => {
    const exported = new ExportVerifier(verifier);
    for (const [i, line] of exportLines.entries()) expect(exported.pushLine(line, i + 1)).toBeUndefined();
    expect(exported.finish()).toMatchObject({ ok: true, records: 2n, checkpoints: 1 });
  });

  it("shows the same records and checkpoint in every section", () => {
    expect(block("json").trimEnd().split("\n")).toEqual(exportLines.slice(1, 3).map((line) => line.slice('{"record":'.length, -1)));
    const note = block("text", 0);
    expect(JSON.parse(exportLines[3] as string)).toEqual({ checkpoint: note });
    expect(verifyCheckpointNote(note, verifier)).toMatchObject({ origin: "agent-machine/audit/01JZ8PZX0EXAMPLE0000000000", size: 2n });
  });

  it("shows records as the server writes them: proto JSON, a gate by the name the code gives it, the hash the text names", () => {
    const records = exportLines.slice(1, 3).map((line) => fromJson(AuditRecordSchema, (JSON.parse(line) as { record: never }).record));
    for (const record of records) for (const gate of record.decision?.gate.split(",").filter(Boolean) ?? []) expect(gates).toContain(gate);
    const first = records[0]?.hash ?? "";
    expect(docs).toContain(`without \`"hash":"${first.slice(0, 4)}…${first.slice(-4)}",\``);
  });
});
