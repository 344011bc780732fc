// How long workspaces stay and how much disk they may take. A workspace is kept after its
// operation ends for the retention period, or until DeleteWorkspace; the periodic sweep then
// removes it. All workspaces of a data dir share one disk limit: when an execution is
// submitted and the workspaces hold as much as the limit or more, the workspaces of ended
// operations go first, oldest end first, until they hold less; if that is not enough (the
// running and waiting executions alone fill it), the submit is refused with ResourceExhausted
// naming the limit. A running execution's own growth is bounded by its localDiskBytes budget,
// not by this limit, so the total can pass the limit by at most what running executions may
// still write. Only workspaces of terminal operations are ever removed: nothing runs in them.
import { chmod, lstat, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { workspaceBytes } from "../executors/workspace-disk.js";
import { workspaceDiskFull } from "../executors/workspace-errors.js";
import { workspaceOf, workspacesDir } from "../executors/workspace-files.js";
import type { Logger } from "../api/logger.js";
import type { StoreOperations } from "../store/store.js";
import { isTerminal } from "../model/transitions.js";

export interface WorkspaceKeeperOptions {
  store: Pick<StoreOperations, "getOperation">;
  dataDir: string;
  /** How long a workspace is kept after its operation ends. */
  retentionMs: number;
  /** Bytes all workspaces may hold together; 0 for no limit. */
  diskLimitBytes: number;
  log: Logger;
}

interface Held {
  operation: string;
  dir: string;
  bytes: number;
  /** When its operation ended; undefined while it runs (or when it is not an operation of this store). */
  ended?: Date;
}

const NO_ROOM_CODES = new Set(["EACCES", "EPERM", "ENOTEMPTY"]);

/**
 * Removes a directory an execution wrote, links and all (never followed). An execution may have
 * taken the write permission off its own directories (chmod 500), which stops a server that is
 * not root from removing what is in them: those get it back first.
 */
export async function removeTree(dir: string): Promise<void> {
  try {
    await rm(dir, { recursive: true, force: true });
  } catch (error) {
    if (!NO_ROOM_CODES.has((error as NodeJS.ErrnoException).code ?? "")) throw error;
    await makeRemovable(dir);
    await rm(dir, { recursive: true, force: true });
  }
}

async function makeRemovable(dir: string): Promise<void> {
  await chmod(dir, 0o700);
  for (const name of await readdir(dir)) {
    const path = join(dir, name);
    if ((await lstat(path)).isDirectory()) await makeRemovable(path);
  }
}

export class WorkspaceKeeper {
  /** Sweeps, room checks and deletes one at a time: none removes what another is measuring. */
  private turn: Promise<unknown> = Promise.resolve();
  /**
   * What each ended operation's workspace holds, measured once: nothing writes to it any more
   * (a submit must not walk every file of every kept workspace again).
   */
  private readonly endedWorkspaces = new Map<string, { bytes: number; ended: Date }>();

  constructor(private readonly options: WorkspaceKeeperOptions) {}

  /** Removes the workspaces of operations that ended more than the retention period ago, then makes room under the limit. */
  sweep(now = new Date()): Promise<void> {
    return this.inTurn(async () => {
      const held = await this.held();
      const expired = held.filter((w) => w.ended !== undefined && now.getTime() - w.ended.getTime() >= this.options.retentionMs);
      for (const workspace of expired) await this.tryRemove(workspace, "its retention period ended");
      await this.makeRoom(held.filter((w) => !expired.includes(w)));
    });
  }

  /** Before an execution is admitted: room under the disk limit, made by removing ended operations' workspaces if need be; else ResourceExhausted. */
  ensureRoom(): Promise<void> {
    if (this.options.diskLimitBytes === 0) return Promise.resolve();
    return this.inTurn(async () => {
      const left = await this.makeRoom(await this.held());
      if (left >= this.options.diskLimitBytes) throw workspaceDiskFull(this.options.diskLimitBytes, left);
    });
  }

  /** Removes the workspace of a terminal operation (the caller checked that it is); what it held, or undefined when there was none. */
  delete(operation: Operation): Promise<number | undefined> {
    return this.inTurn(async () => {
      const dir = workspaceOf(this.options.dataDir, operation.name);
      if (
        !(await lstat(dir).then(
          (s) => s.isDirectory(),
          () => false,
        ))
      )
        return undefined;
      const bytes = await workspaceBytes(dir, new Map());
      await this.remove({ operation: operation.name, dir, bytes }, "it was deleted");
      return bytes;
    });
  }

  private inTurn<T>(work: () => Promise<T>): Promise<T> {
    const result = this.turn.then(work);
    this.turn = result.catch(() => undefined);
    return result;
  }

  /** Removes ended operations' workspaces, oldest end first, while all together hold the limit or more; returns what they hold then. */
  private async makeRoom(held: Held[]): Promise<number> {
    let total = held.reduce((sum, w) => sum + w.bytes, 0);
    const limit = this.options.diskLimitBytes;
    if (limit === 0) return total;
    const removable = held.filter((w) => w.ended !== undefined).sort((a, b) => a.ended!.getTime() - b.ended!.getTime());
    for (const workspace of removable) {
      if (total < limit) break;
      if (await this.tryRemove(workspace, `the workspaces held ${total} bytes, at or over their limit of ${limit}`)) total -= workspace.bytes;
    }
    return total;
  }

  private async held(): Promise<Held[]> {
    const root = workspacesDir(this.options.dataDir);
    const ids = await readdir(root).catch(() => [] as string[]);
    const held: Held[] = [];
    for (const id of ids) {
      const operation = `operations/${id}`;
      const dir = workspaceOf(this.options.dataDir, operation);
      // An ended operation's workspace no longer changes: it is measured and looked up once, so
      // a check costs a directory listing plus the running operations, not every workspace kept.
      const known = this.endedWorkspaces.get(operation);
      if (known !== undefined) {
        held.push({ operation, dir, ...known });
        continue;
      }
      const stored = await this.options.store.getOperation(operation);
      const ended = stored !== undefined && isTerminal(stored.state) ? timestampDate(stored.endTime ?? stored.createTime!) : undefined;
      const bytes = await workspaceBytes(dir, new Map());
      if (ended) this.endedWorkspaces.set(operation, { bytes, ended });
      held.push({ operation, dir, bytes, ...(ended ? { ended } : {}) });
    }
    return held;
  }

  /** Removes a workspace for the sweep or the limit: one that cannot be removed is logged and left, and the rest go on. */
  private async tryRemove(workspace: Held, why: string): Promise<boolean> {
    try {
      await this.remove(workspace, why);
      return true;
    } catch (error) {
      this.options.log.error({ err: error, operation: workspace.operation }, "could not remove a workspace");
      return false;
    }
  }

  private async remove(workspace: Pick<Held, "operation" | "dir" | "bytes">, why: string): Promise<void> {
    await removeTree(workspace.dir);
    this.endedWorkspaces.delete(workspace.operation);
    this.options.log.info({ operation: workspace.operation, bytes: workspace.bytes, why }, "removed a workspace");
  }
}
