// How fast an exported audit log verifies: `amctl audit verify --from-export`'s work (each line
// parsed, checked canonical, hashed, linked; every checkpoint's signature checked) in records/s,
// against a plain sequential SHA-256 of the same lines, the least any verifier of a hash chain
// must do. In process: it is CPU work on bytes, with no server or socket involved.
import { createHash } from "node:crypto";
import { Writable } from "node:stream";
import { ExportVerifier, writeExport } from "../src/audit/export-file.js";
import { parseVerifierKey } from "../src/audit/signed-note.js";
import { buildLog, newAuditKey, ORIGIN } from "../test/audit/audit-log-fixture.js";
import { count, fixed } from "./format.js";
import { ratio } from "./stats.js";

const CHECKPOINT_EVERY = 1000;
const ROUNDS = 3;

async function exportLines(records: number): Promise<{ lines: string[]; verifierKey: string }> {
  const key = newAuditKey();
  const log = buildLog(records, CHECKPOINT_EVERY, key);
  let text = "";
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      text += chunk.toString("utf8");
      callback();
    },
  });
  await writeExport(log.records, log.checkpoints, { origin: ORIGIN, verifierKey: key.verifierKey }, sink);
  return { lines: text.trimEnd().split("\n"), verifierKey: key.verifierKey };
}

/** Best of `ROUNDS` (the least disturbed by the rest of the machine), in seconds. */
function fastest(run: () => void): number {
  let best = Infinity;
  for (let i = 0; i < ROUNDS; i += 1) {
    const started = performance.now();
    run();
    best = Math.min(best, (performance.now() - started) / 1000);
  }
  return best;
}

export async function verifySpeed(records: number): Promise<{ lines: string[]; data: object }> {
  const { lines, verifierKey } = await exportLines(records);
  const verifier = parseVerifierKey(verifierKey);
  const verifySeconds = fastest(() => {
    const exported = new ExportVerifier(verifier);
    lines.forEach((line, i) => {
      const failure = exported.pushLine(line, i + 1);
      if (failure !== undefined) throw new Error(`the benchmark's own export does not verify: ${failure.reason}`);
    });
    if (!exported.finish().ok) throw new Error("the benchmark's own export does not verify");
  });
  const hashSeconds = fastest(() => {
    let previous = "";
    for (const line of lines) previous = createHash("sha256").update(previous).update(line).digest("hex");
  });
  const verifyRate = records / verifySeconds;
  const hashRate = records / hashSeconds;
  return {
    lines: [
      `verify ${count(records)} exported records (a checkpoint every ${CHECKPOINT_EVERY}), best of ${ROUNDS}:`,
      `  amctl audit verify --from-export: ${count(verifyRate)} records/s`,
      `  plain sequential SHA-256 of the same lines: ${count(hashRate)} records/s`,
      `  verify / plain hash: ${fixed(ratio(verifyRate, hashRate))}`,
    ],
    data: { records, verifyRecordsPerSecond: verifyRate, hashRecordsPerSecond: hashRate, ratio: ratio(verifyRate, hashRate) },
  };
}
