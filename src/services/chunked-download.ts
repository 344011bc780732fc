// The download pattern every streamed file shares (a diagnostics bundle, a workspace file): the
// file's digest is known before the first byte goes out, the bytes go out in chunks of at most
// 64 KiB, and they are hashed as they are sent, so a file that changed meanwhile ends the
// stream with an error instead of a download that silently does not match its digest.
import { createHash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";

export const DOWNLOAD_CHUNK_BYTES = 64 * 1024;

/** SHA-256 of the whole file behind `file` (lowercase hex), read from its start. */
export async function sha256OfFile(file: FileHandle): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of file.createReadStream({ start: 0, autoClose: false, highWaterMark: DOWNLOAD_CHUNK_BYTES })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/**
 * The file's bytes from its start, in chunks of at most DOWNLOAD_CHUNK_BYTES; throws `changed()`
 * after the last chunk if what was sent does not have the digest `sha256`. The caller closes `file`.
 */
export async function* verifiedChunks(file: FileHandle, sha256: string, changed: () => Error): AsyncGenerator<Buffer> {
  const sent = createHash("sha256");
  for await (const chunk of file.createReadStream({ start: 0, autoClose: false, highWaterMark: DOWNLOAD_CHUNK_BYTES })) {
    sent.update(chunk as Buffer);
    yield chunk as Buffer;
  }
  if (sent.digest("hex") !== sha256) throw changed();
}
