// Budget arithmetic, dimension by dimension. Amounts stay within what the wire holds (uint64):
// sums saturate at 2^64−1 and differences floor at zero, so no amount a caller or a worker
// reports can make a later write fail to encode — a settlement that failed half-way would leave
// its operation running for ever.
import { create } from "@bufbuild/protobuf";
import { BudgetSchema, type Budget } from "../gen/agentmachine/v1/budget_pb.js";
import { budgetDimensions, type BudgetDimensionName } from "./budget-dimensions.js";

/** The most any budget dimension holds: 2^64−1. */
export const MAX_AMOUNT = (1n << 64n) - 1n;

/** `x + y`, saturating at MAX_AMOUNT. */
export function addAmounts(x: bigint, y: bigint): bigint {
  const sum = x + y;
  return sum > MAX_AMOUNT ? MAX_AMOUNT : sum;
}

function combine(a: Budget | undefined, b: Budget | undefined, op: (x: bigint, y: bigint) => bigint): Budget {
  const result = create(BudgetSchema);
  for (const dimension of budgetDimensions) result[dimension] = op(a?.[dimension] ?? 0n, b?.[dimension] ?? 0n);
  return result;
}

/** `a + b`, saturating at MAX_AMOUNT in every dimension. */
export const addBudgets = (a: Budget | undefined, b: Budget | undefined): Budget => combine(a, b, addAmounts);

/** `a − b`, floored at zero in every dimension. */
export const subtractBudgets = (a: Budget | undefined, b: Budget | undefined): Budget => combine(a, b, (x, y) => (x > y ? x - y : 0n));

/** The smaller of `a` and `b` in every dimension. */
export const minBudgets = (a: Budget | undefined, b: Budget | undefined): Budget => combine(a, b, (x, y) => (x < y ? x : y));

/**
 * What an account holds once one of its operations settles: the operation's reservation given
 * back and what it spent kept, but never more than it reserved. The reservation is what was
 * carved out for the operation on every account of its chain, so however much an execution
 * reports having used, no ancestor is charged past it.
 */
export function settledHolding(held: Budget, reserved: Budget, spent: Budget): Budget {
  return addBudgets(subtractBudgets(held, reserved), minBudgets(spent, reserved));
}

/** The first dimension (of `dimensions`) in which `amount` exceeds `limit`. */
export function firstExcess(amount: Budget, limit: Budget, dimensions: readonly BudgetDimensionName[] = budgetDimensions): BudgetDimensionName | undefined {
  return dimensions.find((dimension) => amount[dimension] > limit[dimension]);
}
