// Budget arithmetic, dimension by dimension. Amounts never go below zero.
import { create } from "@bufbuild/protobuf";
import { BudgetSchema, type Budget } from "../gen/agentmachine/v1/budget_pb.js";
import { budgetDimensions, type BudgetDimensionName } from "./budget-dimensions.js";

function combine(a: Budget | undefined, b: Budget | undefined, op: (x: bigint, y: bigint) => bigint): Budget {
  const result = create(BudgetSchema);
  for (const dimension of budgetDimensions) result[dimension] = op(a?.[dimension] ?? 0n, b?.[dimension] ?? 0n);
  return result;
}

export const addBudgets = (a: Budget | undefined, b: Budget | undefined): Budget => combine(a, b, (x, y) => x + y);

/** `a − b`, floored at zero in every dimension. */
export const subtractBudgets = (a: Budget | undefined, b: Budget | undefined): Budget => combine(a, b, (x, y) => (x > y ? x - y : 0n));

/** The first dimension (of `dimensions`) in which `amount` exceeds `limit`. */
export function firstExcess(amount: Budget, limit: Budget, dimensions: readonly BudgetDimensionName[] = budgetDimensions): BudgetDimensionName | undefined {
  return dimensions.find((dimension) => amount[dimension] > limit[dimension]);
}
