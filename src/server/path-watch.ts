// Watches files and directories that may not exist yet and may be replaced. Each is watched
// through the deepest directory on its way that exists (fs.watch on that directory, keeping
// only events for the name that leads to the target), so a file that appears, a directory made
// later (`amctl init` makes DATA_DIR/operator) and an editor's rename over a file are all seen;
// watching a file's own inode would lose it at the first rename. Events are coalesced over a
// short window; then every watch is set up again (directories on the way may have come or
// gone) before the callback runs, so what the callback reads is what the new watches report
// changes of. Where a watch cannot be set up (no inotify watches left), changes are still
// picked up on SIGHUP; the server says so once.
import { statSync, watch, type FSWatcher } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import type { Logger } from "../api/logger.js";

export interface WatchedPath {
  path: string;
  /** A directory: a change of anything directly in it counts. A file: only a change of it. */
  kind: "file" | "directory";
}

/** Long enough to take an editor's save (write, rename, chmod) as one change. */
const COALESCE_MS = 100;

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Where `target` is watched from: a directory that exists, and the name in it that leads to the target (none: any name). */
function vantage({ path, kind }: WatchedPath): { dir: string; name?: string } {
  const absolute = resolve(path);
  if (kind === "directory" && isDirectory(absolute)) return { dir: absolute };
  let name = basename(absolute);
  let dir = dirname(absolute);
  while (!isDirectory(dir) && dirname(dir) !== dir) {
    name = basename(dir);
    dir = dirname(dir);
  }
  return { dir, name };
}

/** Calls `onChange` (at most once per window) after any of `paths` may have changed, until closed. */
export function watchPaths(paths: readonly WatchedPath[], onChange: () => void, log: Logger): { close(): void } {
  let watchers: FSWatcher[] = [];
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const unwatchable = new Set<string>();

  const changed = (): void => {
    if (closed || timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      if (closed) return;
      arm();
      onChange();
    }, COALESCE_MS);
    timer.unref();
  };

  const arm = (): void => {
    for (const watcher of watchers) watcher.close();
    watchers = [];
    const wanted = new Map<string, Set<string> | "any">();
    for (const target of paths) {
      const { dir, name } = vantage(target);
      const names = wanted.get(dir);
      wanted.set(dir, name === undefined || names === "any" ? "any" : (names ?? new Set<string>()).add(name));
    }
    for (const [dir, names] of wanted) {
      try {
        const watcher = watch(dir, { persistent: false }, (_event, filename) => {
          // No name (some platforms), or the directory's own (it was removed or moved away): look again.
          if (names === "any" || filename === null || filename === basename(dir) || names.has(filename)) changed();
        });
        watcher.on("error", changed);
        watchers.push(watcher);
      } catch (error) {
        // Removed since it was looked at: look again.
        if ((error as NodeJS.ErrnoException).code === "ENOENT") changed();
        if ((error as NodeJS.ErrnoException).code === "ENOENT" || unwatchable.has(dir)) continue;
        unwatchable.add(dir);
        log.warn({ dir, err: error }, "cannot watch this directory: changes in it are picked up on SIGHUP");
      }
    }
  };

  arm();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      for (const watcher of watchers) watcher.close();
    },
  };
}
