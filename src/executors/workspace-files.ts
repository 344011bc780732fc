// What an execution left in its workspace, read the way an adversary's directory must be read:
// every entry from lstat, so a symbolic link is listed as a link and never followed (an
// execution can plant `ln -s /etc/shadow x`, or a link into the server's data dir); a path
// with a link among its directories is refused; a file is opened with O_NOFOLLOW and
// O_NONBLOCK (a FIFO must not hang the server) and then checked, by the path the kernel
// opened (/proc/self/fd), to be the very file inside the workspace that was asked for. A file
// with other hard links is not read either: its other name could be a file of the server's
// (an execution without a sandbox can link one). The server's own capture of stdout and
// stderr (output-capture.ts) is not the execution's and is left out.
import type { Stats } from "node:fs";
import { constants } from "node:fs";
import { lstat, open, readdir, readlink, realpath, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { WorkspaceFileSchema, WorkspaceFileType, type WorkspaceFile } from "../gen/agentmachine/v1/workspace_service_pb.js";
import { hardLinkedFile, notARegularFile, serverFile, symlinkNotFollowed, unreadableFile, workspaceEntryNotFound } from "./workspace-errors.js";
import { operationIdOf } from "../model/resource-names.js";

/** Where the workspaces of a data dir are, one directory per operation. */
export function workspacesDir(dataDir: string): string {
  return join(dataDir, "workspaces");
}

/** The workspace of `operation` (`operations/{id}`). */
export function workspaceOf(dataDir: string, operation: string): string {
  return join(workspacesDir(dataDir), operationIdOf(operation));
}

/**
 * The components of a path a client names inside a workspace: relative, `/`-separated, with no
 * empty, `.` or `..` component (a trailing `/` is allowed); undefined when it is not one.
 */
export function workspacePathComponents(path: string): string[] | undefined {
  if (path === "") return [];
  const components = (path.endsWith("/") ? path.slice(0, -1) : path).split("/");
  return components.every((c) => c !== "" && c !== "." && c !== ".." && !c.includes("\0")) ? components : undefined;
}

/** The names output-capture.ts gives the capture of an attempt's stdout and stderr, at the workspace's top. */
const CAPTURE_LOG = /^(stdout|stderr)\.[0-9]+\.log$/;

export function isCaptureLog(components: readonly string[]): boolean {
  return components.length === 1 && CAPTURE_LOG.test(components[0]!);
}

function fileType(stats: Stats): WorkspaceFileType {
  if (stats.isFile()) return WorkspaceFileType.REGULAR;
  if (stats.isDirectory()) return WorkspaceFileType.DIRECTORY;
  if (stats.isSymbolicLink()) return WorkspaceFileType.SYMLINK;
  return WorkspaceFileType.OTHER;
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException).code;
}

/** Byte order of UTF-8, which the listing promises (JavaScript compares UTF-16 code units). */
function byteOrder(a: WorkspaceFile, b: WorkspaceFile): number {
  return Buffer.compare(Buffer.from(a.path, "utf8"), Buffer.from(b.path, "utf8"));
}

export class WorkspaceFiles {
  private realDir: Promise<string> | undefined;

  constructor(
    /** `operations/{id}`, for the errors. */
    private readonly operation: string,
    private readonly dir: string,
  ) {}

  /** The entry at `components` (the workspace itself when empty) and everything under it, in byte order of their paths, without digests. */
  async list(components: readonly string[]): Promise<WorkspaceFile[]> {
    const files: WorkspaceFile[] = [];
    if (components.length === 0) await this.walk(this.dir, [], files);
    else {
      if (isCaptureLog(components)) throw workspaceEntryNotFound(this.operation, components.join("/"));
      const { path, stats } = await this.entryAt(components);
      files.push(await this.describe(path, components, stats));
      if (stats.isDirectory()) await this.walk(path, components, files);
    }
    return files.sort(byteOrder);
  }

  /** A listed regular file, opened to be hashed; undefined for any entry that is not read (a link, another type, a hard-linked or unreadable file). The caller closes it. */
  async openListed(file: WorkspaceFile): Promise<FileHandle | undefined> {
    if (file.type !== WorkspaceFileType.REGULAR) return undefined;
    const components = file.path.split("/");
    return this.entryAt(components)
      .then(({ path, stats }) => this.openChecked(components, path, stats))
      .catch(() => undefined);
  }

  /** Opens a regular file for download, or says why it is not one that is read. The caller closes the handle. */
  async openForDownload(components: readonly string[]): Promise<{ handle: FileHandle; file: WorkspaceFile }> {
    if (isCaptureLog(components)) throw serverFile(this.operation, components.join("/"));
    const { path, stats } = await this.entryAt(components);
    const handle = await this.openChecked(components, path, stats);
    return { handle, file: await this.describe(path, components, stats) };
  }

  private async walk(dir: string, prefix: readonly string[], into: WorkspaceFile[]): Promise<void> {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return; // unreadable (an execution's chmod 000): its entries cannot be listed
    }
    for (const name of names) {
      const components = [...prefix, name];
      if (isCaptureLog(components)) continue;
      const path = join(dir, name);
      const stats = await lstat(path).catch(() => undefined);
      if (stats === undefined) continue;
      into.push(await this.describe(path, components, stats));
      if (stats.isDirectory()) await this.walk(path, components, into);
    }
  }

  private async describe(path: string, components: readonly string[], stats: Stats): Promise<WorkspaceFile> {
    return create(WorkspaceFileSchema, {
      path: components.join("/"),
      type: fileType(stats),
      sizeBytes: BigInt(stats.size),
      mode: stats.mode & 0o7777,
      linkTarget: stats.isSymbolicLink() ? await readlink(path).catch(() => "") : "",
      modifyTime: timestampFromDate(stats.mtime),
    });
  }

  /** lstat of `components`, refusing a symbolic link among the directories on the way. */
  private async entryAt(components: readonly string[]): Promise<{ path: string; stats: Stats }> {
    let path = this.dir;
    for (const [i, component] of components.entries()) {
      path = join(path, component);
      const stats = await lstat(path).catch((error: unknown) => {
        if (errorCode(error) === "ENOENT" || errorCode(error) === "ENOTDIR") throw workspaceEntryNotFound(this.operation, components.join("/"));
        throw error;
      });
      if (i === components.length - 1) return { path, stats };
      if (stats.isSymbolicLink()) throw symlinkNotFollowed(this.operation, components.slice(0, i + 1).join("/"), await readlink(path).catch(() => "?"));
      if (!stats.isDirectory()) throw workspaceEntryNotFound(this.operation, components.join("/"));
    }
    return { path, stats: await lstat(path) };
  }

  /** Opens the regular file `stats` describes at `path`, and makes sure the descriptor is that file, inside the workspace. */
  private async openChecked(components: readonly string[], path: string, stats: Stats): Promise<FileHandle> {
    const shown = components.join("/");
    if (stats.isSymbolicLink()) throw symlinkNotFollowed(this.operation, shown, await readlink(path).catch(() => "?"));
    if (stats.isDirectory()) throw notARegularFile(this.operation, shown, "a directory");
    if (!stats.isFile()) throw notARegularFile(this.operation, shown, "not a regular file (a FIFO, socket or device)");
    if (stats.nlink > 1) throw hardLinkedFile(this.operation, shown, stats.nlink);
    let handle: FileHandle;
    try {
      handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (error) {
      if (errorCode(error) === "ELOOP") throw symlinkNotFollowed(this.operation, shown, await readlink(path).catch(() => "?"));
      if (errorCode(error) === "ENOENT") throw workspaceEntryNotFound(this.operation, shown);
      throw unreadableFile(this.operation, shown, errorCode(error) ?? "an error");
    }
    try {
      const opened = await handle.stat();
      this.realDir ??= realpath(this.dir);
      const where = await readlink(`/proc/self/fd/${handle.fd}`);
      // Replaced between the lstat and the open, or reached through a link: not the file asked for.
      if (opened.ino !== stats.ino || opened.dev !== stats.dev || !opened.isFile() || opened.nlink > 1 || where !== join(await this.realDir, ...components)) {
        throw unreadableFile(this.operation, shown, "it changed while it was opened");
      }
      return handle;
    } catch (error) {
      await handle.close();
      throw error;
    }
  }
}
