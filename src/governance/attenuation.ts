// Attenuation: a child delegation is never wider than its parent, on any axis. Pure functions,
// so the rule is testable for all inputs (test/governance/attenuation.test.ts).
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";
import type { DelegationScope } from "../gen/agentmachine/v1/delegation_pb.js";
import { budgetDimensions } from "../model/budget-dimensions.js";

export const ANY = "*";

/**
 * Whether `allowed` (a scope list where "*" means any) allows `item`. An entry ending in `/*`
 * allows every item below its prefix (`files/*` allows `files/read` and `files/*`): a grant of
 * every tool of one MCP upstream server (docs/mcp-gateway.md). Only tool names may be written so.
 */
export function allows(allowed: readonly string[], item: string): boolean {
  return allowed.some((entry) => entry === ANY || entry === item || (entry.endsWith("/*") && item.startsWith(entry.slice(0, -1))));
}

function listWithin(child: readonly string[], parent: readonly string[]): string | undefined {
  return child.find((item) => (item === ANY ? !parent.includes(ANY) : !allows(parent, item)));
}

/** Whether `path` (absolute, resolved) lies at or below `prefix`: `/a/b` covers `/a/b/c`, not `/a/bc`. */
export function underPrefix(path: string, prefix: string): boolean {
  return prefix === "/" || path === prefix || path.startsWith(`${prefix}/`);
}

/** Whether a scope's mount prefixes (where "*" means any) cover `path`. */
export function prefixesCover(prefixes: readonly string[], path: string): boolean {
  return prefixes.includes(ANY) || prefixes.some((prefix) => underPrefix(path, prefix));
}

export type Widening = { axis: string; detail: string };

/** The first way `child` is wider than `parent`, or undefined if it is within. */
export function widening(child: DelegationScope, parent: DelegationScope, childBudgetLimit: Budget | undefined): Widening | undefined {
  const op = child.operationTypes.find((type) => !parent.operationTypes.includes(type));
  if (op !== undefined) return { axis: "operation_types", detail: `operation type ${op} is not in the parent's scope` };
  const policy = child.policyProfileTypes.find((type) => !parent.policyProfileTypes.includes(type));
  if (policy !== undefined) return { axis: "policy_profile_types", detail: `changing the policy of profile type ${policy} is not in the parent's scope` };
  for (const axis of ["profiles", "tools", "modelProviders", "workerProfiles"] as const) {
    const extra = listWithin(child[axis], parent[axis]);
    if (extra !== undefined) return { axis, detail: `${extra} is not in the parent's ${axis}` };
  }
  const prefix = child.mountPrefixes.find((item) => (item === ANY ? !parent.mountPrefixes.includes(ANY) : !prefixesCover(parent.mountPrefixes, item)));
  if (prefix !== undefined) return { axis: "mount_prefixes", detail: `${prefix} is not under the parent's mount_prefixes` };
  if (child.mayDelegate && !parent.mayDelegate) return { axis: "may_delegate", detail: "the parent may not delegate further" };
  if (child.auditRead && !parent.auditRead) return { axis: "audit_read", detail: "the parent may not read the audit log" };
  const limit = childBudgetLimit ?? parent.budget;
  for (const dimension of budgetDimensions) {
    const wanted = child.budget?.[dimension] ?? 0n;
    const available = limit?.[dimension] ?? 0n;
    if (wanted > available) return { axis: `budget.${dimension}`, detail: `${wanted} exceeds the ${available} available` };
  }
  return undefined;
}
