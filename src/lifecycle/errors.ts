// Errors of the operations domain, built in one place so each kind looks the same on the wire.
import { Code } from "@connectrpc/connect";
import { errorWithInfo, invalidField } from "../api/errors.js";
import { taskStateNames } from "../model/mapping.js";
import type { TaskState } from "../gen/agentmachine/v1/types_pb.js";

export function eventsCompacted(cursor: bigint, oldest: bigint) {
  return errorWithInfo(Code.OutOfRange, "EVENTS_COMPACTED", `events after sequence ${cursor} are no longer retained; the oldest available is ${oldest}`, {
    after_sequence: String(cursor),
    oldest_sequence: String(oldest),
  });
}

export function cursorAhead(cursor: bigint, latest: bigint) {
  return errorWithInfo(Code.OutOfRange, "CURSOR_AHEAD", `after_sequence ${cursor} is beyond the newest event, ${latest}`, {
    after_sequence: String(cursor),
    latest_sequence: String(latest),
  });
}

export function operationNotFound(name: string) {
  return errorWithInfo(Code.NotFound, "OPERATION_NOT_FOUND", `${name} does not exist`, { operation: name });
}

export function illegalTransition(name: string, from: TaskState, action: string) {
  const state = taskStateNames.get(from) ?? String(from);
  return errorWithInfo(Code.FailedPrecondition, "ILLEGAL_TRANSITION", `${name} is ${state}: cannot ${action}`, {
    operation: name,
    state,
  });
}

/** `field`: the metadata key that names what the request id made (`operation`, `delegation`, `policy_bundle`). */
export function requestIdConflict(requestId: string, existing: string, field = "operation") {
  return errorWithInfo(Code.AlreadyExists, "REQUEST_ID_REUSED", `request_id "${requestId}" was already used for ${existing} with a different request body`, {
    request_id: requestId,
    [field]: existing,
  });
}

export function noExecutor(operationType: string, why: string) {
  return errorWithInfo(Code.FailedPrecondition, "NO_EXECUTOR", `${operationType} cannot run on this server: ${why}`, {
    operation_type: operationType,
  });
}

/** An execution cannot be confined here; `detail` says why and how to install the sandbox. */
export function sandboxUnavailable(detail: string) {
  return errorWithInfo(Code.FailedPrecondition, "SANDBOX_UNAVAILABLE", `agent_machine.execution.start cannot run on this server: ${detail}`, {
    operation_type: "agent_machine.execution.start",
  });
}

export function targetNotAllowed(field: string, message: string) {
  return errorWithInfo(Code.FailedPrecondition, "TARGET_NOT_ALLOWED", message, { field });
}

export function invalidPageToken() {
  return invalidField("page_token", "is not a page token this server issued for this RPC and filter");
}
