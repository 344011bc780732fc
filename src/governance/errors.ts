// Errors of governance, made in one place so that every denial of a kind looks the same.
import { Code } from "@connectrpc/connect";
import { errorWithInfo } from "../server/errors.js";

/** No credential, or one that is not valid: expired, not yet valid, revoked, forged, unknown. */
export function unauthenticated(reason: string) {
  return errorWithInfo(Code.Unauthenticated, "CREDENTIAL_INVALID", reason);
}

/** A valid credential whose delegation does not cover what was asked. */
export function outOfScope(axis: string, detail: string, delegation: string) {
  return errorWithInfo(Code.PermissionDenied, "OUT_OF_SCOPE", `${delegation} does not allow this: ${detail}`, { axis, delegation });
}
