// Human output of governance answers: gate decisions, policy bundles, separation rules and
// budgets, in the contract's spellings (mapping.ts). `--json` prints the proto JSON instead.
import type { Budget, BudgetDimension } from "../gen/agentmachine/v1/budget_pb.js";
import type { PolicyDecision } from "../gen/agentmachine/v1/operation_pb.js";
import type { PolicyBundle } from "../gen/agentmachine/v1/policy_pb.js";
import type { SeparationRule } from "../gen/agentmachine/v1/profile_service_pb.js";
import type { ProfileType } from "../gen/agentmachine/v1/types_pb.js";
import { profileTypeNames } from "../model/mapping.js";
import { budgetDimensions } from "../model/budget-dimensions.js";
import { gateName } from "../model/policy-gates.js";
import { formatTable, spelled, timeText } from "./format.js";

/** Enough of a SHA-256 for a person to tell bundles apart; `--json` has it whole. */
export const shortDigest = (digest: string): string => (digest === "" ? "(none)" : digest.slice(0, 12));

const profileTypeName = (type: ProfileType): string => spelled(profileTypeNames, type);

/** One row per gate: its decision, the rule that decided and the bundle it came from. */
export function formatDecisions(decisions: PolicyDecision[]): string {
  return formatTable(
    ["GATE", "DECISION", "RULE", "BUNDLE", "REASON"],
    decisions.map((d) => [gateName(d.gate), d.allowed ? "allow" : "deny", d.rule, shortDigest(d.bundleDigest), d.reason]),
  );
}

/** `allowed` or `denied: WHY`, then the decisions of the gates concerned (none concern some requests). */
export function formatVerdict(allowed: boolean, denial: string, decisions: PolicyDecision[]): string {
  return [allowed ? "allowed" : `denied: ${denial}`, ...(decisions.length > 0 ? [formatDecisions(decisions)] : [])].join("\n");
}

/** `modelCalls 199, tokens 159990, …`, every dimension in contract order. */
export function formatBudget(budget: Budget | undefined): string {
  return budgetDimensions.map((dimension) => `${dimension} ${budget?.[dimension] ?? 0n}`).join(", ");
}

/** BudgetDimension numbers the dimensions from 1 in contract order. */
export const dimensionName = (dimension: BudgetDimension): string => budgetDimensions[dimension - 1] ?? `unspecified(${dimension})`;

export function formatBundleTable(bundles: PolicyBundle[]): string {
  return formatTable(
    ["PROFILE TYPE", "VERSION", "DIGEST", "APPLIED BY", "APPLIED"],
    bundles.map((b) => [profileTypeName(b.profileType), String(b.version), shortDigest(b.digest), b.appliedBy, timeText(b.applyTime)]),
  );
}

/** `personal: version 2, digest …` with the whole digest, to compare with `sha256sum FILE`. */
export function formatBundle(bundle: PolicyBundle): string {
  return `${profileTypeName(bundle.profileType)}: version ${bundle.version}, digest ${bundle.digest} (${bundle.name})`;
}

export function formatSeparationRule(rule: SeparationRule): string {
  return [
    `${rule.id}  (violation: ${rule.violationCode})`,
    `  ${rule.description}`,
    `  profile types: ${rule.profileTypes.map(profileTypeName).join(", ") || "every profile type"}`,
    `  enforced at:   ${rule.enforcedAt.join("; ")}`,
  ].join("\n");
}
