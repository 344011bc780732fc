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
  return errorWithInfo(Code.FailedPrecondition, "WORKERS_DISABLED", "this server runs executions itself; start it with `amctl serve --workers` to dispatch them to remote workers");
}
