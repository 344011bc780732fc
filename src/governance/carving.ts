// Budget carving: what remains of a delegation's budget for a new child or a new operation is
// its budget less what its active children were given and what its own operations hold.
// Revoked and expired children give their share back.
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";
import type { Delegation } from "../gen/agentmachine/v1/delegation_pb.js";
import { inactiveReason } from "./authority.js";
import { subtractBudgets } from "./budget-math.js";

export function remainingOf(budget: Budget | undefined, children: readonly Delegation[], held: Budget | undefined, now: Date): Budget {
  let remaining = subtractBudgets(budget, held);
  for (const child of children) {
    if (inactiveReason(child, now) === undefined) remaining = subtractBudgets(remaining, child.scope?.budget);
  }
  return remaining;
}
