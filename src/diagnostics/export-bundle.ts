// Making a bundle, start to end, without touching the disk: the allowlisted files (assemble.ts)
// pass the detectors (redact.ts), a manifest is added, everything is packed into one .tar.gz
// (archive.ts), and the packed bytes are scanned again (final-scan.ts). The result is either
// the archive or the findings that make the export fail; never both.
import type { JsonObject } from "@bufbuild/protobuf";
import type { AllowlistTally } from "./allowlist.js";
import type { ArchiveEntry } from "./archive.js";
import { packArchive } from "./archive.js";
import type { BundleFile } from "./assemble.js";
import type { Detector } from "./detector.js";
import { finalScan, type Finding } from "./final-scan.js";
import { MANIFEST, buildManifest, sha256Hex } from "./manifest.js";
import { redactJson, type DetectorTally } from "./redact.js";

export interface BundleMeta {
  operation: string;
  profile: string;
  exportTime: Date;
  serverVersion: string;
  /** What the allowlists replaced while the files were assembled. */
  allowlist: AllowlistTally;
}

export interface Pipeline {
  /** Run over every string of every file, in order; what they find is replaced. */
  detectors: readonly Detector[];
  /** Run over the packed archive; anything they find fails the export. Usually the same list. */
  finalScanDetectors: readonly Detector[];
}

export type BundleResult =
  | { kind: "bundle"; archive: Buffer; sha256: string; manifest: JsonObject; replaced: DetectorTally }
  | { kind: "leak"; findings: Finding[] };

/** The folder every file of the archive is in: `amctl-diagnostics-<operation id>`. */
export function bundleFolder(operation: string): string {
  return `amctl-diagnostics-${operation.replace(/^operations\//, "")}`;
}

function json(value: unknown): Buffer {
  return Buffer.from(`${JSON.stringify(value, null, 2)}\n`, "utf8");
}

export async function exportBundle(files: readonly BundleFile[], meta: BundleMeta, pipeline: Pipeline): Promise<BundleResult> {
  const replaced: DetectorTally = new Map();
  const redacted = files.map((file) => ({ name: file.name, data: json(redactJson(file.content, pipeline.detectors, replaced)) }));
  // The manifest names the operation and profile as the files do (a profile named like a secret
  // env value reads redacted there too); the rest of it is made here, after the field pass.
  const named = redactJson({ operation: meta.operation, profile: meta.profile }, pipeline.detectors, replaced) as { operation: string; profile: string };
  const manifest = buildManifest({
    ...meta,
    ...named,
    files: redacted,
    detectors: pipeline.detectors,
    replaced,
    finalScanDetectors: pipeline.finalScanDetectors,
  });
  const folder = bundleFolder(meta.operation);
  const entries: ArchiveEntry[] = [{ name: MANIFEST, data: json(manifest) }, ...redacted].map((entry) => ({
    name: `${folder}/${entry.name}`,
    data: entry.data,
  }));
  const archive = await packArchive(entries, meta.exportTime);
  const findings = await finalScan(archive, pipeline.finalScanDetectors);
  if (findings.length > 0) return { kind: "leak", findings };
  return { kind: "bundle", archive, sha256: sha256Hex(archive), manifest, replaced };
}

/** A failed export's explanation: which detectors found how much where — never what they found. */
export function describeFindings(findings: readonly Finding[]): string {
  const parts = findings.map((finding) => `${finding.detector} ×${finding.count} in ${finding.where}`);
  return `the final scan of the bundle found what redaction must have removed (${parts.join(", ")}); no bundle was produced`;
}
