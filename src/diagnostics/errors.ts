// Errors of the diagnostics download, built in one place so each kind looks the same on the wire.
import { Code } from "@connectrpc/connect";
import { taskStateNames } from "../model/mapping.js";
import type { TaskState } from "../gen/agentmachine/v1/types_pb.js";
import { errorWithInfo } from "../api/errors.js";

export function notADiagnosticsExport(name: string) {
  return errorWithInfo(Code.FailedPrecondition, "NOT_A_DIAGNOSTICS_EXPORT", `${name} is not an agent_machine.diagnostics.export_redacted operation`, {
    operation: name,
  });
}

export function bundleNotReady(name: string, state: TaskState) {
  const stateName = taskStateNames.get(state) ?? String(state);
  return errorWithInfo(Code.FailedPrecondition, "BUNDLE_NOT_READY", `${name} is ${stateName}: only a completed export has a bundle`, {
    operation: name,
    state: stateName,
  });
}

export function bundleNotHere(name: string) {
  return errorWithInfo(
    Code.NotFound,
    "BUNDLE_NOT_FOUND",
    `the bundle of ${name} is not in this server's data dir (another replica exported it, or it was removed)`,
    { operation: name },
  );
}

export function bundleCorrupt(name: string) {
  return errorWithInfo(Code.DataLoss, "BUNDLE_DIGEST_MISMATCH", `the bundle of ${name} no longer matches the SHA-256 recorded in its artifact`, {
    operation: name,
  });
}
