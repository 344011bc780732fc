// Budget carving: a child's budget comes out of what its parent's other children have not
// already taken. Revoked and expired children give their share back.
import { clone, create } from "@bufbuild/protobuf";
import { BudgetSchema, type Budget } from "../gen/agentmachine/v1/budget_pb.js";
import type { Delegation } from "../gen/agentmachine/v1/delegation_pb.js";
import { inactiveReason } from "./authority.js";
import { budgetDimensions } from "./budget-dimensions.js";

export function remainingForChildren(parentBudget: Budget | undefined, siblings: readonly Delegation[], now: Date): Budget {
  // A copy: `create` would hand back the parent's own (cached) Budget, and this loop mutates it.
  const remaining = parentBudget ? clone(BudgetSchema, parentBudget) : create(BudgetSchema);
  for (const sibling of siblings) {
    if (inactiveReason(sibling, now) !== undefined) continue;
    for (const dimension of budgetDimensions) {
      const taken = sibling.scope?.budget?.[dimension] ?? 0n;
      remaining[dimension] = remaining[dimension] > taken ? remaining[dimension] - taken : 0n;
    }
  }
  return remaining;
}
