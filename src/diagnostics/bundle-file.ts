// Where a diagnostics bundle is kept: `<dataDir>/diagnostics/<operation id>.tar.gz`, written
// whole (a temporary file renamed into place) so that a reader never sees half a bundle.
import { randomBytes } from "node:crypto";
import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { operationIdOf } from "../model/resource-names.js";

const OPERATION_ID = /^[A-Za-z0-9_-]{1,64}$/;

export function diagnosticsDir(dataDir: string): string {
  return join(dataDir, "diagnostics");
}

/** The bundle file of the operation `operations/{id}`. */
export function bundlePath(dataDir: string, operation: string): string {
  const id = operationIdOf(operation);
  if (!OPERATION_ID.test(id)) throw new Error(`not an operation name: ${JSON.stringify(operation)}`);
  return join(diagnosticsDir(dataDir), `${id}.tar.gz`);
}

/** Writes the bundle readable by the server's user only, atomically. */
export function writeBundle(path: string, archive: Buffer): void {
  mkdirSync(join(path, ".."), { recursive: true, mode: 0o700 });
  const temporary = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    writeFileSync(temporary, archive, { mode: 0o600, flag: "wx" });
    renameSync(temporary, path);
  } finally {
    rmSync(temporary, { force: true });
  }
}

/** Removes a bundle (or what is left of one); no error if there is none. */
export function removeBundle(path: string): void {
  rmSync(path, { force: true });
}
