// Errors of the worker protocol, built in one place so each kind looks the same on the wire.
import { Code } from "@connectrpc/connect";
import { errorWithInfo } from "../api/errors.js";

/** A report or heartbeat under a lease the server no longer honours: the worker must drop the task. */
export function leaseRejected(operation: string, fencingToken: bigint, why: string) {
  return errorWithInfo(Code.FailedPrecondition, "LEASE_REJECTED", `the lease on ${operation} (fencing token ${fencingToken}) is not current: ${why}`, {
    operation,
    fencing_token: String(fencingToken),
  });
}

export function notAWorker(delegation: string) {
  return errorWithInfo(Code.PermissionDenied, "NOT_A_WORKER", `${delegation} may not act as a worker: its scope has no worker_profiles`, { delegation });
}

export function workersDisabled() {
  return errorWithInfo(
    Code.FailedPrecondition,
    "WORKERS_DISABLED",
    "this server runs executions itself; start it with `amctl serve --workers` to dispatch them to remote workers",
  );
}

/**
 * Mounts name host paths, which the server resolves and judges on its own disk; a remote worker
 * runs the execution on another machine, where the same path is another file.
 */
export function mountsOnRemoteWorkers(field: string) {
  return errorWithInfo(
    Code.FailedPrecondition,
    "MOUNTS_ON_REMOTE_WORKERS",
    `${field}: this server runs executions on remote workers, whose host paths it cannot resolve or judge; mount nothing, or run the execution on a server without --workers`,
    { field },
  );
}
