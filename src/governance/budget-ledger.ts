// Budget admission and settlement. An execution reserves its requested budget, at admission,
// from two accounts — its delegation and its profile — in the same commit that stores it; when
// it ends, the reservation is given back and what it really spent of the consumable dimensions
// is kept. Why only the admitting delegation, not every ancestor: a child's budget was carved
// out of its parent when it was issued, so fitting in the child is fitting in the chain.
import { clone, create } from "@bufbuild/protobuf";
import { BudgetSchema, type Budget } from "../gen/agentmachine/v1/budget_pb.js";
import type { Delegation } from "../gen/agentmachine/v1/delegation_pb.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import type { AccountState, Reservation, Settlement, StoredProfile } from "../store/store.js";
import type { BudgetDimensionName } from "./budget-dimensions.js";
import { firstExcess } from "./budget-math.js";
import { remainingOf } from "./carving.js";
import { budgetExceeded } from "./errors.js";

/** Spent for good once used. */
const consumable: readonly BudgetDimensionName[] = ["modelCalls", "tokens", "connectorCalls", "cpuGpuComputeSeconds", "wallClockSeconds"];
/** Held while the task runs, all given back when it ends. */
const occupied: readonly BudgetDimensionName[] = ["localDiskBytes", "sandboxMemoryBytes"];
/** agentConcurrency is not reserved: it caps running executions (src/lifecycle/concurrency.ts). */
const reserved = [...consumable, ...occupied];

/** Operation types that run and spend; the others are records and commands and reserve nothing. */
export function spendsBudget(type: OperationType): boolean {
  return type === OperationType.EXECUTION_START || type === OperationType.CONTAINER_RUN;
}

export function accountsOf(operation: Pick<Operation, "delegation" | "profile">): string[] {
  return [operation.delegation, operation.profile];
}

function only(budget: Budget | undefined, dimensions: readonly BudgetDimensionName[]): Budget {
  const result = create(BudgetSchema);
  for (const dimension of dimensions) result[dimension] = budget?.[dimension] ?? 0n;
  return result;
}

/**
 * The reservation of an execution, with its check: the amount must fit in what remains of the
 * delegation (its budget less its active children's and its operations' holdings) and of the
 * profile's budget if it has one, and both must allow at least one running execution.
 */
export function reservationFor(operation: Operation, delegation: Delegation, profile: StoredProfile, now: Date): Reservation {
  const amount = only(operation.requestedBudget, reserved);
  return {
    accounts: accountsOf(operation),
    amount,
    check: ([delegationAccount, profileAccount]: readonly AccountState[]) => {
      const fromDelegation = remainingOf(delegation.scope?.budget, delegationAccount!.children, delegationAccount!.held, now);
      const limits: [string, Budget][] = [[delegation.name, fromDelegation]];
      if (profile.budget !== undefined) limits.push([profile.name, remainingOf(profile.budget, [], profileAccount!.held, now)]);
      for (const [account, remaining] of limits) {
        const wanted = clone(BudgetSchema, amount);
        wanted.agentConcurrency = 1n;
        const dimension = firstExcess(wanted, remaining, [...reserved, "agentConcurrency"]);
        if (dimension !== undefined) return budgetExceeded(account, dimension, wanted[dimension], remaining[dimension]);
      }
      return undefined;
    },
  };
}

/** Gives back what `operation` reserved and keeps what it spent. */
export function settlementFor(operation: Operation): Settlement {
  return { accounts: accountsOf(operation), reserved: only(operation.requestedBudget, reserved), spent: only(operation.usage, consumable) };
}
