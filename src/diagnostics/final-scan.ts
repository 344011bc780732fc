// The last line: the packed archive is scanned as it will leave — its raw bytes, the tar stream
// inside it (headers included), each file as text, and each JSON file's values by field — with
// every detector. Anything found there means a secret got past the allowlist and the field
// detectors (or was made by packing), and the export must fail.
import type { JsonValue } from "@bufbuild/protobuf";
import { decompress, untar } from "./archive.js";
import { RAW, type Detector, type Where } from "./detector.js";

export interface Finding {
  detector: string;
  /** `archive` (the .tar.gz bytes), `tar` (the tar stream) or the path of a file in the archive. */
  where: string;
  /** Finds there: a value in a JSON file counts once in its text and once among its values. */
  count: number;
}

function scanText(text: string, where: string, how: Where, detectors: readonly Detector[], findings: Map<string, Finding>): void {
  for (const detector of detectors) {
    const count = detector.find(text, how).length;
    if (count === 0) continue;
    const key = `${detector.id}\u0000${where}`;
    const finding = findings.get(key) ?? { detector: detector.id, where, count: 0 };
    finding.count += count;
    findings.set(key, finding);
  }
}

function scanJson(value: JsonValue, where: string, detectors: readonly Detector[], findings: Map<string, Finding>, field?: string): void {
  if (typeof value === "string") scanText(value, where, field === undefined ? { kind: "value" } : { kind: "value", field }, detectors, findings);
  else if (Array.isArray(value)) for (const item of value) scanJson(item, where, detectors, findings, field);
  else if (typeof value === "object" && value !== null) {
    for (const [key, item] of Object.entries(value)) {
      scanText(key, where, { kind: "value" }, detectors, findings);
      scanJson(item, where, detectors, findings, key);
    }
  }
}

/** What `detectors` find in the archive; empty when it is clean. */
export async function finalScan(archive: Buffer, detectors: readonly Detector[]): Promise<Finding[]> {
  const findings = new Map<string, Finding>();
  scanText(archive.toString("latin1"), "archive", RAW, detectors, findings);
  const tarBytes = await decompress(archive);
  scanText(tarBytes.toString("latin1"), "tar", RAW, detectors, findings);
  for (const entry of await untar(tarBytes)) {
    const text = entry.data.toString("utf8");
    scanText(text, entry.name, RAW, detectors, findings);
    let parsed: JsonValue | undefined;
    try {
      parsed = JSON.parse(text) as JsonValue;
    } catch {
      parsed = undefined; // not JSON: scanned as text only
    }
    if (parsed !== undefined) scanJson(parsed, entry.name, detectors, findings);
  }
  return [...findings.values()];
}
