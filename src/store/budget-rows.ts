// The budget arithmetic both stores apply to account rows in the commit of a reservation or a
// settlement (src/model/budget-math.ts holds the sums): given what each account holds now, what
// each must hold after. An account named twice is charged twice.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BudgetSchema, type Budget } from "../gen/agentmachine/v1/budget_pb.js";
import { addBudgets, settledHolding } from "../model/budget-math.js";

/** What each of `accounts` holds once `amount` is reserved on it; `held` reads what it holds now. */
export function reservedHoldings(held: (account: string) => Budget, accounts: readonly string[], amount: Budget): Map<string, Budget> {
  const after = new Map<string, Budget>();
  for (const account of accounts) after.set(account, addBudgets(after.get(account) ?? held(account), amount));
  return after;
}

/** What each of `accounts` holds once a reservation of `reserved` on it is settled, `spent` kept. */
export function settledHoldings(held: (account: string) => Budget, accounts: readonly string[], reserved: Budget, spent: Budget): Map<string, Budget> {
  const after = new Map<string, Budget>();
  for (const account of accounts) after.set(account, settledHolding(after.get(account) ?? held(account), reserved, spent));
  return after;
}

/** A budget column as read (`held`, `amount`): nothing without a row or a value. */
export function budgetFromColumn(held: Uint8Array | null | undefined): Budget {
  return held ? fromBinary(BudgetSchema, held) : create(BudgetSchema);
}

/** A budget as its columns store it (`held`, a reservation's `amount`). */
export function budgetColumn(budget: Budget): Uint8Array {
  return toBinary(BudgetSchema, budget);
}
