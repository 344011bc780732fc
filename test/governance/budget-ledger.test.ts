// The budget ledger's pure rules, for all inputs: the defaults an execution gets never exceed
// what its admitting delegation and its profile can still give (so a dimension at 0 there gives
// a 0 default, and the execution still admits); an execution needs some of each dimension it runs
// in (compute, memory, disk, wall clock); and an attempt's measured usage adds up saturating.
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BudgetSchema, type Budget } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { DelegationSchema } from "../../src/gen/agentmachine/v1/delegation_pb.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { OperationSchema } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { OperationType, ProfileType } from "../../src/gen/agentmachine/v1/types_pb.js";
import type { Principal } from "../../src/governance/authority.js";
import { budgetDimensions, type BudgetDimensionName } from "../../src/model/budget-dimensions.js";
import { executionDefaults, reservationFor, withAttemptUsage } from "../../src/governance/budget-ledger.js";
import { MAX_AMOUNT } from "../../src/model/budget-math.js";
import type { AccountState, StoredProfile } from "../../src/store/store.js";

const now = new Date();
const amount = (max: bigint) => fc.bigInt({ min: 0n, max });
const budgetOf = (max: bigint): fc.Arbitrary<Budget> =>
  fc
    .record(Object.fromEntries(budgetDimensions.map((d) => [d, amount(max)])) as Record<BudgetDimensionName, fc.Arbitrary<bigint>>)
    .map((init) => create(BudgetSchema, init));

function principalWith(budget: Budget): Principal {
  return { delegation: create(DelegationSchema, { name: "delegations/agent", scope: { budget } }), chain: [] };
}

/** A store holding `held` on the delegation and the profile, nothing else. */
function storeHolding(delegationHeld: Budget, profileHeld: Budget) {
  const states: Record<string, AccountState> = {
    "delegations/agent": { account: "delegations/agent", held: delegationHeld, children: [] },
    "profiles/p": { account: "profiles/p", held: profileHeld, children: [] },
  };
  return { readAccounts: async (accounts: readonly string[]) => accounts.map((account) => states[account]!) };
}

const profileWith = (budget?: Budget): StoredProfile => ({ name: "profiles/p", profileType: ProfileType.PERSONAL, ...(budget ? { budget } : {}) });
const floor = (x: bigint, y: bigint) => (x > y ? x - y : 0n);
const least = (...xs: bigint[]) => xs.reduce((a, b) => (a < b ? a : b));

describe("execution defaults", () => {
  it("are the server's defaults cut to what the delegation and a budgeted profile have left, dimension by dimension", async () => {
    await fc.assert(
      fc.asyncProperty(
        budgetOf(1000n),
        budgetOf(1000n),
        budgetOf(1000n),
        budgetOf(1000n),
        budgetOf(1000n),
        fc.boolean(),
        async (defaults, delegationBudget, delegationHeld, profileBudget, profileHeld, budgeted) => {
          const profile = profileWith(budgeted ? profileBudget : undefined);
          const got = await executionDefaults(storeHolding(delegationHeld, profileHeld), defaults, principalWith(delegationBudget), profile, now);
          for (const d of budgetDimensions) {
            const fromDelegation = floor(delegationBudget[d], delegationHeld[d]);
            const fromProfile = budgeted ? floor(profileBudget[d], profileHeld[d]) : defaults[d];
            expect(got[d]).toBe(least(defaults[d], fromDelegation, fromProfile));
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it("give a dimension the delegation has at 0 a default of 0, and the execution still admits (it just cannot spend that dimension)", async () => {
    const defaults = create(BudgetSchema, {
      modelCalls: 200n,
      tokens: 160_000n,
      connectorCalls: 120n,
      cpuGpuComputeSeconds: 3600n,
      localDiskBytes: 1n << 30n,
      sandboxMemoryBytes: 1n << 30n,
      wallClockSeconds: 5400n,
      agentConcurrency: 2n,
    });
    const delegationBudget = create(BudgetSchema, { ...defaults, modelCalls: 0n, tokens: 0n, cpuGpuComputeSeconds: 100n });
    const principal = principalWith(delegationBudget);
    const profile = profileWith();
    const requestedBudget = await executionDefaults(storeHolding(create(BudgetSchema), create(BudgetSchema)), defaults, principal, profile, now);
    expect(requestedBudget).toMatchObject({ modelCalls: 0n, tokens: 0n, connectorCalls: 120n, cpuGpuComputeSeconds: 100n, wallClockSeconds: 5400n });
    const operation = create(OperationSchema, { name: "operations/x", type: OperationType.EXECUTION_START, requestedBudget });
    const reservation = reservationFor(operation, principal, profile);
    const accounts = reservation.accounts.map((account): AccountState => ({ account, held: create(BudgetSchema), children: [] }));
    expect(reservation.check(accounts)).toBeUndefined();
  });
});

describe("reservations", () => {
  it("refuse an execution with nothing left of a dimension it runs in, naming it (an executor would read a limit of 0 as none)", () => {
    for (const dimension of ["cpuGpuComputeSeconds", "localDiskBytes", "sandboxMemoryBytes", "wallClockSeconds"] as const) {
      const principal = principalWith(
        create(BudgetSchema, {
          cpuGpuComputeSeconds: 10n,
          localDiskBytes: 10n,
          sandboxMemoryBytes: 10n,
          wallClockSeconds: 10n,
          agentConcurrency: 1n,
          [dimension]: 0n,
        }),
      );
      const requestedBudget = create(BudgetSchema, {
        cpuGpuComputeSeconds: 10n,
        localDiskBytes: 10n,
        sandboxMemoryBytes: 10n,
        wallClockSeconds: 10n,
        [dimension]: 0n,
      });
      const operation = create(OperationSchema, { name: "operations/x", type: OperationType.EXECUTION_START, requestedBudget });
      const reservation = reservationFor(operation, principal, profileWith());
      const refusal = reservation.check(reservation.accounts.map((account) => ({ account, held: create(BudgetSchema), children: [] })));
      expect(refusal).toBeInstanceOf(ConnectError);
      expect(ConnectError.from(refusal).findDetails(ErrorInfoSchema)[0]?.metadata).toEqual({
        account: "delegations/agent",
        dimension,
        requested: "1",
        remaining: "0",
      });
    }
  });
});

describe("a reservation's check", () => {
  it("counts a child delegation issued after admission began, whose validity starts after it (judged when the store checks, not when admission read the clock)", async () => {
    const principal = principalWith(
      create(BudgetSchema, {
        tokens: 1000n,
        cpuGpuComputeSeconds: 10n,
        localDiskBytes: 10n,
        sandboxMemoryBytes: 10n,
        wallClockSeconds: 10n,
        agentConcurrency: 1n,
      }),
    );
    const requestedBudget = create(BudgetSchema, {
      tokens: 1000n,
      cpuGpuComputeSeconds: 10n,
      localDiskBytes: 10n,
      sandboxMemoryBytes: 10n,
      wallClockSeconds: 10n,
    });
    const reservation = reservationFor(
      create(OperationSchema, { name: "operations/x", type: OperationType.EXECUTION_START, requestedBudget }),
      principal,
      profileWith(),
    );
    await new Promise((resolve) => setTimeout(resolve, 20));
    // Issued meanwhile, valid from now on, carving all the tokens.
    const child = create(DelegationSchema, { name: "delegations/child", notBefore: timestampFromDate(new Date()), scope: { budget: { tokens: 1000n } } });
    const accounts = reservation.accounts.map(
      (account): AccountState => ({
        account,
        held: create(BudgetSchema),
        children: account === "delegations/agent" ? [{ delegation: child, held: create(BudgetSchema) }] : [],
      }),
    );
    expect(ConnectError.from(reservation.check(accounts)).findDetails(ErrorInfoSchema)[0]?.metadata).toMatchObject({
      account: "delegations/agent",
      dimension: "tokens",
      remaining: "0",
    });
  });
});

describe("an attempt's usage", () => {
  it("adds compute and wall-clock seconds over attempts saturating at 2^64−1, and always encodes", () => {
    const huge = fc.oneof(amount(MAX_AMOUNT), fc.constant(MAX_AMOUNT));
    fc.assert(
      fc.property(huge, huge, huge, (before, attempt, peak) => {
        const merged = withAttemptUsage(
          create(BudgetSchema, { tokens: 5n }),
          create(BudgetSchema, { cpuGpuComputeSeconds: before, wallClockSeconds: before, sandboxMemoryBytes: peak }),
          create(BudgetSchema, { cpuGpuComputeSeconds: attempt, wallClockSeconds: attempt, sandboxMemoryBytes: attempt }),
        );
        expect(() => toBinary(BudgetSchema, merged)).not.toThrow();
        expect(merged.cpuGpuComputeSeconds).toBe(least(before + attempt, MAX_AMOUNT));
        expect(merged.wallClockSeconds).toBe(least(before + attempt, MAX_AMOUNT));
        expect(merged.sandboxMemoryBytes).toBe(peak > attempt ? peak : attempt);
        expect(merged.tokens).toBe(5n);
      }),
      { numRuns: 1000 },
    );
  });
});
