// Measures the disk an operation holds: the apparent size (lstat) of every entry under its
// workspace, files, directories and links alike, links never followed (a link to / must not
// make the walk leave the workspace). Apparent size, not allocated blocks, because the budget
// is of bytes the task writes: a sparse file counts at its full length, which errs on the side
// of the budget. Hard links count once per name, likewise.
//
// The server writes files of its own there too (the capture logs of stdout and stderr, each
// bounded by the output limit). They get an allowance rather than an exemption: only what
// exceeds it counts, so a process that writes into them itself cannot hide data there.
import type { Dirent } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";

/** Bytes under `dir`; `allowances` maps absolute paths to the bytes of them that do not count. */
export async function workspaceBytes(dir: string, allowances: ReadonlyMap<string, number>): Promise<number> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return 0; // removed while being walked, or not made yet
  }
  const sizes = await Promise.all(
    entries.map(async (entry) => {
      const path = join(dir, entry.name);
      const size = await lstat(path).then(
        (stats) => stats.size,
        () => 0, // removed meanwhile
      );
      const counted = Math.max(0, size - (allowances.get(path) ?? 0));
      return entry.isDirectory() ? counted + (await workspaceBytes(path, allowances)) : counted;
    }),
  );
  return sizes.reduce((sum, size) => sum + size, 0);
}
