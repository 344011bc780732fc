// Profile separation: every rule that keeps profiles apart, with where it is enforced. This
// table is both the enforcement (`requireSeparation`, called at admission and by
// RuntimeService) and the explanation (ProfileService.ExplainSeparation), so the two cannot
// disagree.
import { Code } from "@connectrpc/connect";
import type { Operation, OperationSpec } from "../gen/agentmachine/v1/operation_pb.js";
import { CallKind, type RuntimeCall } from "../gen/agentmachine/v1/runtime_pb.js";
import { ProfileType } from "../gen/agentmachine/v1/types_pb.js";
import { separationViolated } from "./errors.js";

/** What the rules look at: the profile acted in and what is being done there. */
export interface SeparationFacts {
  profile: string;
  profileType: ProfileType;
  /** An operation being admitted. */
  spec?: OperationSpec["kind"];
  /** For a cancel or a revoke: the operation it targets. */
  target?: Operation;
  /** A runtime call being authorized. */
  call?: RuntimeCall;
  /** For a model call: the types of the provider profiles the provider is bound in (empty: not bound). */
  providerProfileTypes?: readonly ProfileType[];
  /** For a tool call: whether an applied, unrevoked grant of the tool exists in the profile. */
  toolGranted?: boolean;
}

export interface SeparationRule {
  id: string;
  description: string;
  /** The profile types concerned; empty when the rule holds for every profile alike. */
  profileTypes: readonly ProfileType[];
  enforcedAt: readonly string[];
  code: Code;
  /** Why `facts` break the rule, or undefined when they do not. */
  violation(facts: SeparationFacts): string | undefined;
}

const providerProfileTypes = [ProfileType.LOCAL_MODEL_PROVIDER, ProfileType.HOSTED_MODEL_PROVIDER, ProfileType.USER_OWNED_MODEL];
const firewalled = [ProfileType.CORPORATE_FIREWALL, ProfileType.MULTI_CORPORATE_FIREWALL];
const isModelCall = (facts: SeparationFacts) => facts.call?.kind === CallKind.MODEL;

export const separationRules: readonly SeparationRule[] = [
  {
    id: "commands-stay-in-their-profile",
    description:
      "A cancel or a grant revocation acts only on an operation of its own profile: nothing done in one profile (personal, corporate_firewall, multi_corporate_firewall, …) reaches into another.",
    profileTypes: [],
    enforcedAt: ["SubmitOperation (execution.cancel, tool_grant.revoke)"],
    code: Code.FailedPrecondition,
    violation: ({ target, profile }) => (target !== undefined && target.profile !== profile ? `${target.name} belongs to another profile` : undefined),
  },
  {
    id: "tool-use-needs-grant-in-profile",
    description:
      "An agent may use a tool only under an applied, unrevoked tool grant of its own profile; a grant in a personal profile never serves a corporate_firewall one, nor the reverse.",
    profileTypes: [],
    enforcedAt: ["RuntimeService.AuthorizeCall (tool calls)"],
    code: Code.PermissionDenied,
    violation: ({ call, toolGranted, profile }) =>
      call?.kind === CallKind.TOOL && toolGranted !== true ? `no applied, unrevoked grant of tool ${call.tool} exists in ${profile}` : undefined,
  },
  {
    id: "provider-binding-targets-provider-profiles",
    description: "model_provider.bind targets only local_model_provider, hosted_model_provider and user_owned_model profiles.",
    profileTypes: [],
    enforcedAt: ["SubmitOperation (model_provider.bind)"],
    code: Code.FailedPrecondition,
    violation: ({ spec, profile, profileType }) =>
      spec?.case === "modelProviderBind" && !providerProfileTypes.includes(profileType)
        ? `${profile} is not a model provider profile: model_provider.bind targets local_model_provider, hosted_model_provider or user_owned_model profiles`
        : undefined,
  },
  {
    id: "model-calls-need-a-binding",
    description: "A model call names a provider bound (model_provider.bind) in a provider profile; unbound providers are never called.",
    profileTypes: [],
    enforcedAt: ["RuntimeService.AuthorizeCall (model calls)"],
    code: Code.FailedPrecondition,
    violation: (facts) =>
      isModelCall(facts) && (facts.providerProfileTypes ?? []).length === 0
        ? `model provider ${facts.call!.modelProvider} is not bound in any provider profile`
        : undefined,
  },
  {
    id: "airgapped-no-network",
    description: "airgapped_local_only profiles never get network egress: no container or execution with network, no connector call.",
    profileTypes: [ProfileType.AIRGAPPED_LOCAL_ONLY],
    enforcedAt: ["SubmitOperation (container.run)", "RuntimeService.AuthorizeCall (connector calls)"],
    code: Code.PermissionDenied,
    violation: ({ profileType, spec, call }) => {
      if (profileType !== ProfileType.AIRGAPPED_LOCAL_ONLY) return undefined;
      if ((spec?.case === "containerRun" || spec?.case === "executionStart") && spec.value.network)
        return "an airgapped_local_only profile never gets network egress";
      if (call?.kind === CallKind.CONNECTOR) return "an airgapped_local_only profile makes no connector calls";
      return undefined;
    },
  },
  {
    id: "airgapped-local-models-only",
    description:
      "airgapped_local_only profiles call only providers bound in local_model_provider profiles and nowhere else: never one bound as a hosted or user-owned model, even if it is also bound as a local one.",
    profileTypes: [ProfileType.AIRGAPPED_LOCAL_ONLY, ProfileType.HOSTED_MODEL_PROVIDER, ProfileType.USER_OWNED_MODEL],
    enforcedAt: ["RuntimeService.AuthorizeCall (model calls)"],
    code: Code.PermissionDenied,
    violation: (facts) =>
      facts.profileType === ProfileType.AIRGAPPED_LOCAL_ONLY &&
      isModelCall(facts) &&
      (facts.providerProfileTypes ?? []).some((type) => type !== ProfileType.LOCAL_MODEL_PROVIDER)
        ? `an airgapped_local_only profile may not call ${facts.call!.modelProvider}, which is bound as a non-local provider`
        : undefined,
  },
  {
    id: "firewall-no-user-owned-models",
    description: "corporate_firewall and multi_corporate_firewall profiles never call a provider bound in a user_owned_model profile.",
    profileTypes: [...firewalled, ProfileType.USER_OWNED_MODEL],
    enforcedAt: ["RuntimeService.AuthorizeCall (model calls)"],
    code: Code.PermissionDenied,
    violation: (facts) =>
      firewalled.includes(facts.profileType) && isModelCall(facts) && (facts.providerProfileTypes ?? []).includes(ProfileType.USER_OWNED_MODEL)
        ? `an enterprise firewall profile may not call ${facts.call!.modelProvider}, a user-owned model`
        : undefined,
  },
];

/** The first rule `facts` break, with why. */
export function separationViolation(facts: SeparationFacts): { rule: SeparationRule; detail: string } | undefined {
  for (const rule of separationRules) {
    const detail = rule.violation(facts);
    if (detail !== undefined) return { rule, detail };
  }
  return undefined;
}

/** Throws the rule's error when `facts` break a rule. */
export function requireSeparation(facts: SeparationFacts): void {
  const found = separationViolation(facts);
  if (found !== undefined) throw separationViolated(found.rule.id, found.rule.code, found.detail);
}

/**
 * The rules that concern `types`: all rules for none; for one type, the rules naming it; for
 * two or more, the rules that keep them apart (naming at least two of them). Rules that hold
 * for every profile alike always concern them.
 */
export function rulesConcerning(types: readonly ProfileType[]): SeparationRule[] {
  if (types.length === 0) return [...separationRules];
  const needed = Math.min(new Set(types).size, 2);
  return separationRules.filter((rule) => rule.profileTypes.length === 0 || rule.profileTypes.filter((type) => types.includes(type)).length >= needed);
}
