// The bundle's archive format: a gzip-compressed POSIX tar (ustar) of one folder, made and read
// with tar-stream and node:zlib. Entries carry fixed owner ids and mode and the export time, so
// the same files give the same archive.
import { promisify } from "node:util";
import { gunzip as gunzipCallback, gzip as gzipCallback } from "node:zlib";
import * as tar from "tar-stream";

const gzip = promisify(gzipCallback);
const gunzip = promisify(gunzipCallback);

export interface ArchiveEntry {
  /** The path inside the archive. */
  name: string;
  data: Buffer;
}

/** The uncompressed tar stream of `entries`, in order. */
export async function tarOf(entries: readonly ArchiveEntry[], mtime: Date): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const read = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  read.catch(() => undefined); // awaited below; an entry that fails first must not leave it unhandled
  for (const entry of entries) {
    await new Promise<void>((resolve, reject) => {
      pack.entry({ name: entry.name, size: entry.data.length, mode: 0o644, mtime, uid: 0, gid: 0, uname: "", gname: "", type: "file" }, entry.data, (error) =>
        error ? reject(error) : resolve(),
      );
    });
  }
  pack.finalize();
  await read;
  return Buffer.concat(chunks);
}

/** A `.tar.gz` of `entries`. */
export async function packArchive(entries: readonly ArchiveEntry[], mtime: Date): Promise<Buffer> {
  return gzip(await tarOf(entries, mtime));
}

/** The tar stream inside a `.tar.gz`. */
export function decompress(archive: Buffer): Promise<Buffer> {
  return gunzip(archive);
}

/** The entries of a tar stream, in order. */
export async function untar(tarBytes: Buffer): Promise<ArchiveEntry[]> {
  const extract = tar.extract();
  const entries: ArchiveEntry[] = [];
  extract.end(tarBytes);
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const chunk of entry) chunks.push(chunk as Buffer);
    entries.push({ name: entry.header.name, data: Buffer.concat(chunks) });
  }
  return entries;
}
