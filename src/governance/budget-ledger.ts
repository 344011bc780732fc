// Budget admission and settlement. An execution reserves the consumable part of its requested
// budget (calls, tokens, compute and wall-clock seconds), at admission, on every delegation of
// its chain and on its profile, in the same commit that stores it; when it ends, the
// reservation is given back and what it really spent is kept, up to the reservation
// (budget-math.ts, settledHolding): usage reported or measured past the operation's budget
// never reaches the accounts above it. Memory and disk are held only while an execution runs,
// so they are caps, not reservations: each execution's request must fit in what the delegation
// and the profile allow, and agentConcurrency bounds how many run at once. The amount is
// checked against the admitting delegation (and the profile): a child's budget was carved out
// of its parent when it was issued, so fitting in the child is fitting in the chain; holding
// it on every ancestor too keeps what a revoked child spent counted.
//
// The server's default fills each dimension a submit leaves at 0, cut to what the admitting
// delegation and the profile can still give: a dimension they have at 0 (none) defaults to 0,
// and the execution is admitted all the same — it cannot spend that dimension. Only the
// dimensions every execution runs in (compute, memory, disk, wall clock: the executor limits
// them, and reads a limit of 0 as none at all) must have something left.
import { create } from "@bufbuild/protobuf";
import { BudgetSchema, type Budget } from "../gen/agentmachine/v1/budget_pb.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import type { AccountState, Reservation, Settlement, StoreAccounts, StoredProfile } from "../store/store.js";
import type { Principal } from "./authority.js";
import type { BudgetDimensionName } from "../model/budget-dimensions.js";
import { addAmounts, addBudgets, firstExcess, minBudgets } from "../model/budget-math.js";
import { remainingOf } from "./carving.js";
import { budgetExceeded } from "./errors.js";

/** Spent for good once used: reserved at admission, settled at the end. */
const consumable: readonly BudgetDimensionName[] = ["modelCalls", "tokens", "connectorCalls", "cpuGpuComputeSeconds", "wallClockSeconds"];
/**
 * Caps per execution: memory and disk (held only while running) and agentConcurrency (at least
 * one execution must be allowed; src/lifecycle/concurrency.ts caps how many run at once).
 */
const capped: readonly BudgetDimensionName[] = ["localDiskBytes", "sandboxMemoryBytes", "agentConcurrency"];
/** What every execution runs in and its executor limits: an execution needs at least 1 of each. */
const runsIn: readonly BudgetDimensionName[] = ["cpuGpuComputeSeconds", "localDiskBytes", "sandboxMemoryBytes", "wallClockSeconds"];

function only(budget: Budget | undefined, dimensions: readonly BudgetDimensionName[]): Budget {
  const result = create(BudgetSchema);
  for (const dimension of dimensions) result[dimension] = budget?.[dimension] ?? 0n;
  return result;
}

/**
 * What an execution must fit in, account by account: what remains of the admitting delegation
 * (its budget less its active children's and its operations' holdings) and of the profile's
 * budget if it has one.
 */
function remainingLimits(
  principal: Principal,
  profile: StoredProfile,
  delegationAccount: AccountState,
  profileAccount: AccountState,
  now: Date,
): [string, Budget][] {
  const { delegation } = principal;
  const limits: [string, Budget][] = [[delegation.name, remainingOf(delegation.scope?.budget, delegationAccount.children, delegationAccount.held, now)]];
  if (profile.budget !== undefined) limits.push([profile.name, remainingOf(profile.budget, [], profileAccount.held, now)]);
  return limits;
}

/**
 * The server's `defaults` for an execution's budget, each cut to what the admitting delegation
 * and the profile can still give. Read outside the submit's commit: the reservation checks
 * again in it, so a concurrent submit that took the room meanwhile makes this one refused.
 */
export async function executionDefaults(
  store: Pick<StoreAccounts, "readAccounts">,
  defaults: Budget,
  principal: Principal,
  profile: StoredProfile,
  now: Date,
): Promise<Budget> {
  const [delegationAccount, profileAccount] = await store.readAccounts([principal.delegation.name, profile.name]);
  return remainingLimits(principal, profile, delegationAccount!, profileAccount!, now).reduce(
    (budget, [, remaining]) => minBudgets(budget, remaining),
    defaults,
  );
}

/**
 * The reservation of an execution, with its check: the amount must fit in what remains of the
 * delegation and of the profile's budget if it has one, both must allow at least one running
 * execution, and at least 1 of each dimension it runs in must be left.
 */
export function reservationFor(operation: Operation, principal: Principal, profile: StoredProfile): Reservation {
  const { delegation, chain } = principal;
  const amount = only(operation.requestedBudget, consumable);
  const perExecution = only(operation.requestedBudget, capped);
  perExecution.agentConcurrency = 1n;
  const wanted = addBudgets(amount, perExecution);
  // A 0 here is a default cut to nothing left (a submit's own 0 takes the default).
  for (const dimension of runsIn) if (wanted[dimension] === 0n) wanted[dimension] = 1n;
  return {
    // The admitting delegation first and the profile last: the check reads them there.
    accounts: [delegation.name, ...chain.map((ancestor) => ancestor.name), profile.name],
    amount,
    // Judged at the time of the check, in the store's commit, not when admission began: a child
    // delegation issued in between is active by then (and was "not valid yet" before), so it
    // must count against what remains.
    check: (accounts: readonly AccountState[]) => {
      for (const [account, remaining] of remainingLimits(principal, profile, accounts[0]!, accounts.at(-1)!, new Date())) {
        const dimension = firstExcess(wanted, remaining);
        if (dimension !== undefined) return budgetExceeded(account, dimension, wanted[dimension], remaining[dimension]);
      }
      return undefined;
    },
  };
}

/** Gives back what `operation` reserved and keeps what it spent (the store keeps no more than was reserved). */
export function settlementFor(operation: Operation): Settlement {
  return { spent: only(operation.usage, consumable) };
}

/** Dimensions an executor measures (the others are charged through RuntimeService). */
const measuredAdded: readonly BudgetDimensionName[] = ["cpuGpuComputeSeconds", "wallClockSeconds"];
const measuredPeak: readonly BudgetDimensionName[] = ["localDiskBytes", "sandboxMemoryBytes"];

/**
 * The operation's usage with an attempt's measurements merged in: `before` is the usage when
 * the attempt started. Compute and wall-clock seconds add up over attempts; memory and disk
 * are peaks. Dimensions charged at runtime (calls, tokens) are left as they are in `current`.
 */
export function withAttemptUsage(current: Budget | undefined, before: Budget | undefined, attempt: Budget): Budget {
  const merged = current ? create(BudgetSchema, { ...current }) : create(BudgetSchema);
  for (const dimension of measuredAdded) merged[dimension] = addAmounts(before?.[dimension] ?? 0n, attempt[dimension]);
  for (const dimension of measuredPeak) {
    const earlier = before?.[dimension] ?? 0n;
    merged[dimension] = earlier > attempt[dimension] ? earlier : attempt[dimension];
  }
  return merged;
}
