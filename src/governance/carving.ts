// Budget carving: what remains of a delegation's budget for a new child or a new operation is
// its budget less everything its subtree holds (reserved by running executions, spent by
// finished ones — including what revoked or expired children spent) and less the unspent part
// of what its active children were given. A revoked or expired child gives back only what it
// had not spent.
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";
import type { ChildAccount } from "../store/store.js";
import { inactiveReason } from "./authority.js";
import { subtractBudgets } from "../model/budget-math.js";

export function remainingOf(budget: Budget | undefined, children: readonly ChildAccount[], held: Budget | undefined, now: Date): Budget {
  let remaining = subtractBudgets(budget, held);
  for (const child of children) {
    if (inactiveReason(child.delegation, now) === undefined)
      remaining = subtractBudgets(remaining, subtractBudgets(child.delegation.scope?.budget, child.held));
  }
  return remaining;
}
