import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const repoRoot = join(import.meta.dirname, "..", "..");

export function tempDir(prefix = "amctl-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}
