// Files `amctl` writes whole or not at all (audit exports and archives): what a reader finds
// under the name is complete and on disk.
import { createWriteStream } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { PassThrough, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";

/**
 * Writes `file` through a partial file that takes its name only once complete and flushed to
 * disk; the directory is flushed too, so that the name survives a crash.
 */
export async function writeWhole(file: string, write: (out: Writable) => Promise<void>): Promise<void> {
  const partial = `${file}.partial`;
  const lines = new PassThrough();
  try {
    // Awaited together, so that a failure on either side ends the write: a failed write
    // destroys `lines`, which fails the pipeline; a failed file fails it directly.
    await Promise.all([
      write(lines).then(
        () => lines.end(),
        (error: unknown) => lines.destroy(error as Error),
      ),
      pipeline(lines, createWriteStream(partial, { mode: 0o600, flush: true })),
    ]);
  } catch (error) {
    await rm(partial, { force: true });
    throw error;
  }
  await rename(partial, file);
  const directory = await open(dirname(file), "r");
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}
