// Runtime charging: what a call costs, and whether a task's usage stays within its budget.
// Pure, so the arithmetic is testable for all inputs; the store applies it atomically.
import { create } from "@bufbuild/protobuf";
import { BudgetSchema, type BudgetDimension, type Budget } from "../gen/agentmachine/v1/budget_pb.js";
import { BudgetWarningSchema, type BudgetWarning } from "../gen/agentmachine/v1/event_pb.js";
import { CallKind, type RuntimeCall } from "../gen/agentmachine/v1/runtime_pb.js";
import { budgetDimensions, type BudgetDimensionName } from "../model/budget-dimensions.js";
import { addBudgets, firstExcess, subtractBudgets } from "../model/budget-math.js";

/** Dimensions charged through RuntimeService (the executor measures the others). */
export const chargedDimensions: readonly BudgetDimensionName[] = ["modelCalls", "tokens", "connectorCalls"];

export const WARNING_PERCENT = 80n;

export function dimensionEnum(name: BudgetDimensionName): BudgetDimension {
  return (budgetDimensions.indexOf(name) + 1) as BudgetDimension;
}

export function costOf(call: RuntimeCall): Budget {
  return call.kind === CallKind.MODEL ? create(BudgetSchema, { modelCalls: 1n, tokens: call.estimatedTokens }) : create(BudgetSchema, { connectorCalls: 1n });
}

export type Charge =
  | { kind: "within"; usage: Budget; warnings: BudgetWarning[] }
  | { kind: "exhausted"; usage: Budget; dimension: BudgetDimensionName; limit: bigint };

/** Usage after adding `add` and taking back `refund`, checked against `limit`; warnings for each dimension that crossed 80 %. */
export function charge(limit: Budget, usage: Budget | undefined, add: Budget, refund?: Budget): Charge {
  const next = subtractBudgets(addBudgets(usage, add), refund);
  const dimension = firstExcess(next, limit, chargedDimensions);
  if (dimension !== undefined) return { kind: "exhausted", usage: next, dimension, limit: limit[dimension] };
  const warnings = chargedDimensions
    .filter((d) => limit[d] > 0n && (usage?.[d] ?? 0n) * 100n < limit[d] * WARNING_PERCENT && next[d] * 100n >= limit[d] * WARNING_PERCENT)
    .map((d) => create(BudgetWarningSchema, { dimension: dimensionEnum(d), used: next[d], limit: limit[d] }));
  return { kind: "within", usage: next, warnings };
}

/**
 * How many of `ahead` tokens a call that needs `need` more may take besides, as a reservation
 * for what it will use next (a stream): as many as keep the tokens used below the 80 % warning
 * line of `limit`. Near the end of a budget calls are so charged
 * exactly what they need, no call is refused for another's reservation there, and no warning is
 * given for tokens only reserved.
 */
export function reservableTokens(limit: bigint, used: bigint, need: bigint, ahead: bigint): bigint {
  // The most that stays below the line: next * 100 < limit * WARNING_PERCENT.
  const below = (limit * WARNING_PERCENT + 99n) / 100n - 1n - used - need;
  return below <= 0n ? 0n : below < ahead ? below : ahead;
}

/**
 * The stop cause's message for an exhausting charge. When the usage was recorded all the same
 * (a report of what was already used) it went past the budget: the message says by how much,
 * and that only the budget is charged to the accounts above the operation (settledHolding).
 */
export function exhaustionMessage(outcome: Extract<Charge, { kind: "exhausted" }>, recorded: boolean): string {
  const { dimension, limit } = outcome;
  const used = outcome.usage[dimension];
  const exhausted = `${dimension} budget exhausted`;
  if (!recorded) return exhausted;
  return `${exhausted}: ${used} reported against a budget of ${limit}, ${used - limit} over; its delegations and profile are charged the ${limit} only`;
}

export function remainingAfter(limit: Budget | undefined, usage: Budget | undefined): Budget {
  return subtractBudgets(limit, usage);
}
