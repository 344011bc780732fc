// manifest.json: what the bundle holds and how it was redacted — each file with its SHA-256 and
// size, the allowlist's and each detector's replacement counts, and the contract's four
// inclusion flags, which are false: an export whose final scan finds anything fails instead.
import { createHash } from "node:crypto";
import type { JsonObject } from "@bufbuild/protobuf";
import type { AllowlistTally } from "./allowlist.js";
import type { Detector } from "./detector.js";
import type { DetectorTally } from "./redact.js";

export const MANIFEST = "manifest.json";
export const MANIFEST_VERSION = 1;

export function sha256Hex(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

export interface ManifestInput {
  operation: string;
  profile: string;
  exportTime: Date;
  serverVersion: string;
  files: readonly { name: string; data: Buffer }[];
  allowlist: AllowlistTally;
  detectors: readonly Detector[];
  replaced: DetectorTally;
  finalScanDetectors: readonly Detector[];
}

export function buildManifest(input: ManifestInput): JsonObject {
  return {
    manifestVersion: MANIFEST_VERSION,
    kind: "AgentMachineDiagnosticBundle",
    operationType: "agent_machine.diagnostics.export_redacted",
    operation: input.operation,
    profile: input.profile,
    exportTime: input.exportTime.toISOString(),
    serverVersion: input.serverVersion,
    files: input.files.map((file) => ({ name: file.name, sha256: sha256Hex(file.data), sizeBytes: file.data.length })),
    redaction: {
      allowlist: { fieldsRedacted: input.allowlist.redactedFields },
      detectors: input.detectors.map((detector) => ({ id: detector.id, category: detector.category, replaced: input.replaced.get(detector.id) ?? 0 })),
      finalScan: { detectors: input.finalScanDetectors.map((detector) => detector.id), findings: 0 },
    },
    credentialsIncluded: false,
    tokensIncluded: false,
    localSecretsIncluded: false,
    sensitivePromptsIncluded: false,
  };
}
