// Errors of governance, made in one place so that every denial of a kind looks the same.
import { Code } from "@connectrpc/connect";
import { errorWithInfo } from "../api/errors.js";
import { PolicyDecisionSchema, type PolicyDecision } from "../gen/agentmachine/v1/operation_pb.js";
import { gateName } from "../model/policy-gates.js";

/** No credential, or one that is not valid: expired, not yet valid, revoked, forged, unknown. */
export function unauthenticated(reason: string) {
  return errorWithInfo(Code.Unauthenticated, "CREDENTIAL_INVALID", reason);
}

/**
 * A credential signed by a key none of the server's trust anchors holds. The usual cause is a
 * root signed before its key reached the server, or with the key of another data dir: the
 * message says that the server reads its anchors again by itself (a restart changes nothing)
 * and what to check. It names no file: the caller is not authenticated.
 */
export function unknownSigningKey() {
  return unauthenticated(
    "the credential is signed by an unknown key: none of this server's trust anchors. The server re-reads them as they change (no restart needed), so a root signed with the key of a fresh `amctl init` is accepted as soon as its public key is in place; if it is still refused, the key is another data dir's: run `amctl init` and `amctl delegation root` with the data dir `amctl serve` uses (--data-dir, default .amctl in the directory each runs in), or give the server the key with --trust-anchor",
  );
}

/** A valid credential whose delegation does not cover what was asked. */
export function outOfScope(axis: string, detail: string, delegation: string) {
  return errorWithInfo(Code.PermissionDenied, "OUT_OF_SCOPE", `${delegation} does not allow this: ${detail}`, { axis, delegation });
}

/** A policy gate said no; the detail is the decision itself (gate, rule, bundle digest, reason). */
export function policyDenied(decision: PolicyDecision) {
  const gate = gateName(decision.gate);
  const error = errorWithInfo(Code.PermissionDenied, "POLICY_DENIED", `the ${gate} gate denied this: rule ${decision.rule}: ${decision.reason}`, {
    gate,
    rule: decision.rule,
    bundle_digest: decision.bundleDigest,
  });
  error.details.push({ desc: PolicyDecisionSchema, value: decision });
  return error;
}

/** A profile separation rule (src/governance/profile-rules.ts) forbids this. */
export function separationViolated(rule: string, code: Code, detail: string) {
  return errorWithInfo(code, "PROFILE_SEPARATION", `${detail} (rule ${rule})`, { rule });
}

/** The requested budget does not fit in what remains of an account (a delegation or a profile). */
export function budgetExceeded(account: string, dimension: string, requested: bigint, remaining: bigint) {
  return errorWithInfo(Code.ResourceExhausted, "BUDGET_EXCEEDED", `${account} has ${remaining} ${dimension} left; ${requested} were requested`, {
    account,
    dimension,
    requested: String(requested),
    remaining: String(remaining),
  });
}

/** The caller may not change the policy of this profile type. */
export function policyChangeNotAllowed(profileType: string, delegation: string) {
  return errorWithInfo(Code.PermissionDenied, "OUT_OF_SCOPE", `${delegation} does not allow changing the ${profileType} policy bundle`, {
    axis: "policy_profile_types",
    delegation,
  });
}

export function profileAlreadyExists(profile: string) {
  return errorWithInfo(Code.AlreadyExists, "PROFILE_EXISTS", `${profile} already exists`, { profile });
}

export function profileNotFound(profile: string) {
  return errorWithInfo(Code.FailedPrecondition, "PROFILE_NOT_FOUND", `${profile} does not exist; create it with agent_machine.profile.create first`, {
    profile,
  });
}

/** A mount that resolves into (or contains) the server's data dir: never mounted, whatever the scope. */
export function mountForbidden(field: string, detail: string) {
  return errorWithInfo(Code.PermissionDenied, "MOUNT_FORBIDDEN", `${field}: ${detail}`, { field });
}
