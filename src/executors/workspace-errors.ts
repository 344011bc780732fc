// Errors of reading and removing workspaces, built in one place so each kind looks the same on
// the wire.
import { Code } from "@connectrpc/connect";
import { taskStateNames } from "../model/mapping.js";
import type { TaskState } from "../gen/agentmachine/v1/types_pb.js";
import { errorWithInfo } from "../api/errors.js";

export function workspaceNotTerminal(operation: string, state: TaskState) {
  const stateName = taskStateNames.get(state) ?? String(state);
  return errorWithInfo(
    Code.FailedPrecondition,
    "OPERATION_NOT_TERMINAL",
    `${operation} is ${stateName}: its workspace is read or removed once the operation has ended`,
    {
      operation,
      state: stateName,
    },
  );
}

export function noWorkspace(operation: string, why: string) {
  return errorWithInfo(Code.FailedPrecondition, "NO_WORKSPACE", `${operation} has no workspace on this server: ${why}`, { operation });
}

export function workspaceOnWorker(operation: string, worker: string) {
  return errorWithInfo(
    Code.FailedPrecondition,
    "WORKSPACE_ON_WORKER",
    `${operation} ran on the remote worker ${worker}, which removed its workspace when the task ended: files of remote executions are not kept`,
    { operation, worker },
  );
}

export function workspaceEntryNotFound(operation: string, path: string) {
  return errorWithInfo(Code.NotFound, "WORKSPACE_FILE_NOT_FOUND", `${operation} has no ${path} in its workspace`, { operation, path });
}

export function symlinkNotFollowed(operation: string, path: string, target: string) {
  return errorWithInfo(
    Code.FailedPrecondition,
    "SYMLINK_NOT_FOLLOWED",
    `${path} in the workspace of ${operation} is a symbolic link (to ${target}): links are listed, never followed or downloaded`,
    { operation, path },
  );
}

export function notARegularFile(operation: string, path: string, what: string) {
  return errorWithInfo(
    Code.FailedPrecondition,
    "NOT_A_REGULAR_FILE",
    `${path} in the workspace of ${operation} is ${what}: only regular files are downloaded`,
    {
      operation,
      path,
    },
  );
}

export function hardLinkedFile(operation: string, path: string, links: number) {
  return errorWithInfo(
    Code.FailedPrecondition,
    "HARD_LINKED_FILE",
    `${path} in the workspace of ${operation} has ${links} hard links: its other names may lie outside the workspace, so it is not read`,
    { operation, path },
  );
}

export function serverFile(operation: string, path: string) {
  return errorWithInfo(
    Code.FailedPrecondition,
    "SERVER_FILE",
    `${path} in the workspace of ${operation} is the server's capture of the execution's output, not a file the execution left`,
    { operation, path },
  );
}

export function unreadableFile(operation: string, path: string, reason: string) {
  return errorWithInfo(Code.FailedPrecondition, "FILE_UNREADABLE", `${path} in the workspace of ${operation} cannot be read: ${reason}`, { operation, path });
}

export function fileChanged(operation: string, path: string) {
  return errorWithInfo(
    Code.DataLoss,
    "FILE_CHANGED",
    `${path} in the workspace of ${operation} changed while it was sent: its bytes no longer match the SHA-256 sent first`,
    {
      operation,
      path,
    },
  );
}

/** The disk limit of all workspaces is reached and removing ended ones did not make room. */
export function workspaceDiskFull(limitBytes: number, usedBytes: number) {
  return errorWithInfo(
    Code.ResourceExhausted,
    "WORKSPACE_DISK_FULL",
    `the workspaces of this server hold ${usedBytes} bytes, at or over their limit of ${limitBytes} (amctl serve --workspace-disk-limit-bytes), even after removing every ended operation's workspace: wait for running executions to end`,
    { limit: "workspace_disk_limit_bytes", limit_bytes: String(limitBytes), used_bytes: String(usedBytes) },
  );
}
