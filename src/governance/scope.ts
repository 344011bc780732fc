// What a principal's delegation allows, asked the same way everywhere: the one place where
// an operation, a profile, a tool or a provider is checked against a scope.
import type { ConnectError } from "@connectrpc/connect";
import type { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import { CallKind, type RuntimeCall } from "../gen/agentmachine/v1/runtime_pb.js";
import { operationTypeNames } from "../model/mapping.js";
import { allows, ANY } from "./attenuation.js";
import type { Principal } from "./authority.js";
import { noteCallProfile } from "../api/call-profiles.js";
import { outOfScope } from "./errors.js";

export interface OperationAccess {
  type: OperationType;
  profile: string;
  tool?: string;
  provider?: string;
}

/** Throws PermissionDenied naming the axis unless the principal may do this. */
export function requireOperation(principal: Principal, access: OperationAccess): void {
  const { scope, name } = { scope: principal.delegation.scope!, name: principal.delegation.name };
  if (!scope.operationTypes.includes(access.type)) {
    throw outOfScope("operation_types", `${operationTypeNames.get(access.type) ?? access.type} is not allowed`, name);
  }
  requireProfile(principal, access.profile);
  if (access.tool !== undefined && !allows(scope.tools, access.tool)) throw outOfScope("tools", `tool ${access.tool} is not allowed`, name);
  if (access.provider !== undefined && !allows(scope.modelProviders, access.provider)) {
    throw outOfScope("model_providers", `model provider ${access.provider} is not allowed`, name);
  }
}

/** Whether the principal may see `profile`; if so, the current call concerns it (its log lines say so: src/api/call-profiles.ts). */
export function canSeeProfile(principal: Principal, profile: string): boolean {
  const allowed = allows(principal.delegation.scope!.profiles, profile);
  if (allowed) noteCallProfile(profile);
  return allowed;
}

/** The PermissionDenied naming the profiles axis, unless the principal may see `profile`. */
export function profileDenial(principal: Principal, profile: string): ConnectError | undefined {
  return canSeeProfile(principal, profile) ? undefined : outOfScope("profiles", `${profile} is not allowed`, principal.delegation.name);
}

export function requireProfile(principal: Principal, profile: string): void {
  const denial = profileDenial(principal, profile);
  if (denial !== undefined) throw denial;
}

/** The profiles a principal may see, or undefined for all of them. */
export function visibleProfiles(principal: Principal): readonly string[] | undefined {
  const profiles = principal.delegation.scope!.profiles;
  return profiles.includes(ANY) ? undefined : profiles;
}

/** Throws PermissionDenied naming the axis unless the principal may make this runtime call in `profile`. */
export function requireCall(principal: Principal, profile: string, call: RuntimeCall): void {
  const { scope, name } = principal.delegation;
  requireProfile(principal, profile);
  if (call.kind === CallKind.TOOL && !allows(scope!.tools, call.tool)) throw outOfScope("tools", `tool ${call.tool} is not allowed`, name);
  if (call.kind === CallKind.MODEL && !allows(scope!.modelProviders, call.modelProvider)) {
    throw outOfScope("model_providers", `model provider ${call.modelProvider} is not allowed`, name);
  }
}
