// Saves a streamed download the same way for every command that downloads (a diagnostics
// bundle, a workspace file): through a partial file, hashed as it is written, and renamed to
// its name only when its SHA-256 and size are the expected ones; otherwise nothing is left.
import { createHash } from "node:crypto";
import { closeSync, openSync, renameSync, rmSync, writeSync } from "node:fs";

export interface Saved {
  sizeBytes: number;
  sha256: string;
}

/**
 * Writes `chunks` to `file`. `expected` is read after the last chunk (a stream may say what it
 * sends in its first message); a mismatch throws, naming `what`.
 */
export async function saveVerified(
  chunks: AsyncIterable<Uint8Array>,
  file: string,
  expected: () => { sha256: string; sizeBytes: bigint },
  what: string,
): Promise<Saved> {
  const partial = `${file}.partial`;
  const fd = openSync(partial, "w", 0o600);
  const hash = createHash("sha256");
  let sizeBytes = 0;
  try {
    for await (const chunk of chunks) {
      writeSync(fd, chunk);
      hash.update(chunk);
      sizeBytes += chunk.length;
    }
  } catch (error) {
    closeSync(fd);
    rmSync(partial, { force: true });
    throw error;
  }
  closeSync(fd);
  const sha256 = hash.digest("hex");
  const wanted = expected();
  if (sha256 !== wanted.sha256 || BigInt(sizeBytes) !== wanted.sizeBytes) {
    rmSync(partial, { force: true });
    throw new Error(`the download of ${what} does not match its digest (sha256 ${sha256}, expected ${wanted.sha256})`);
  }
  renameSync(partial, file);
  return { sizeBytes, sha256 };
}
