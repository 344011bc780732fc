// Decides a runtime call (a model, connector or tool call an execution asks to make): the
// caller's scope, then the profile separation rules, then the policy gates. Used by the one
// runtime-call path (gateways/runtime-call.ts admitCall: RuntimeService.AuthorizeCall, the egress
// proxy, the model and MCP gateways) and, as a dry run, by PolicyService.EvaluatePolicy.
import { ConnectError } from "@connectrpc/connect";
import type { PolicyDecision } from "../gen/agentmachine/v1/operation_pb.js";
import { CallKind, type RuntimeCall } from "../gen/agentmachine/v1/runtime_pb.js";
import { ProfileType } from "../gen/agentmachine/v1/types_pb.js";
import type { StoreAccounts } from "../store/store.js";
import type { Principal } from "./authority.js";
import { policyDenied, profileNotFound } from "./errors.js";
import type { GrantIndex } from "./grant-index.js";
import { gatesForCall } from "../model/policy-gates.js";
import type { PolicyEngine } from "./policy/policy-engine.js";
import { callInput, type Destination, type ToolCallFacts } from "./policy/policy-input.js";
import { requireSeparation } from "./profile-rules.js";
import { requireCall } from "./scope.js";

export interface CallDecisionDeps {
  store: StoreAccounts;
  policy: PolicyEngine;
  grants: GrantIndex;
}

export interface CallVerdict {
  decisions: PolicyDecision[];
  /** Set when the call is not allowed: the error that says why. */
  denial?: ConnectError;
}

/** For policy rules, one type: the least local the provider is bound as (hosted, then user-owned, then local). */
function leastLocal(types: readonly ProfileType[]): ProfileType | undefined {
  return [ProfileType.HOSTED_MODEL_PROVIDER, ProfileType.USER_OWNED_MODEL, ProfileType.LOCAL_MODEL_PROVIDER].find((type) => types.includes(type));
}

export async function decideCall(
  deps: CallDecisionDeps,
  principal: Principal,
  profile: string,
  call: RuntimeCall,
  labels: Readonly<Record<string, string>> = {},
  destination?: Destination,
  toolCall?: ToolCallFacts,
): Promise<CallVerdict> {
  try {
    requireCall(principal, profile, call);
    const stored = await deps.store.getProfile(profile);
    if (stored === undefined) throw profileNotFound(profile);
    const bound = call.kind === CallKind.MODEL ? await deps.grants.providerProfileTypes(call.modelProvider) : [];
    requireSeparation({
      profile,
      profileType: stored.profileType,
      call,
      providerProfileTypes: bound,
      ...(call.kind === CallKind.TOOL ? { toolGranted: await deps.grants.toolGranted(profile, call.tool) } : {}),
    });
    const where = { principal, profile, profileType: stored.profileType };
    const decisions = deps.policy.decide(stored.profileType, gatesForCall(call), callInput(where, call, leastLocal(bound), labels, destination, toolCall));
    const denied = decisions.find((decision) => !decision.allowed);
    return { decisions, ...(denied ? { denial: policyDenied(denied) } : {}) };
  } catch (error) {
    if (error instanceof ConnectError) return { decisions: [], denial: error };
    throw error;
  }
}
