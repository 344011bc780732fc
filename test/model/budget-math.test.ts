// Budget arithmetic, for all inputs up to the wire's limit (uint64): sums saturate at 2^64−1 and
// differences floor at 0, so no amount ever fails to encode (a settlement that threw half-way
// left its operation running); and a settlement keeps at most what was reserved, so a child's
// over-report never reaches past its carve-out into its ancestors' accounts.
import { create, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BudgetSchema, type Budget } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { budgetDimensions, type BudgetDimensionName } from "../../src/model/budget-dimensions.js";
import { addBudgets, MAX_AMOUNT, minBudgets, settledHolding, subtractBudgets } from "../../src/model/budget-math.js";

/** Amounts anywhere in uint64, with its edges (0, 1, 2^64−2, 2^64−1) often. */
const amount = fc.oneof(fc.bigInt({ min: 0n, max: MAX_AMOUNT }), fc.constantFrom(0n, 1n, MAX_AMOUNT - 1n, MAX_AMOUNT));
const budget: fc.Arbitrary<Budget> = fc
  .record(Object.fromEntries(budgetDimensions.map((d) => [d, amount])) as Record<BudgetDimensionName, fc.Arbitrary<bigint>>)
  .map((init) => create(BudgetSchema, init));

const exactMin = (x: bigint, y: bigint) => (x < y ? x : y);

describe("budget arithmetic", () => {
  it("MAX_AMOUNT is 2^64−1, the most a uint64 holds", () => {
    expect(MAX_AMOUNT).toBe(18_446_744_073_709_551_615n);
  });

  it("adds dimension by dimension, saturating at 2^64−1: the result always encodes and is the exact sum below the limit", () => {
    fc.assert(
      fc.property(budget, budget, (a, b) => {
        const sum = addBudgets(a, b);
        expect(() => toBinary(BudgetSchema, sum)).not.toThrow();
        for (const d of budgetDimensions) expect(sum[d]).toBe(exactMin(a[d] + b[d], MAX_AMOUNT));
      }),
      { numRuns: 2000 },
    );
  });

  it("subtracts floored at 0, and takes the smaller amount per dimension", () => {
    fc.assert(
      fc.property(budget, budget, (a, b) => {
        const difference = subtractBudgets(a, b);
        const smaller = minBudgets(a, b);
        for (const d of budgetDimensions) {
          expect(difference[d]).toBe(a[d] > b[d] ? a[d] - b[d] : 0n);
          expect(smaller[d]).toBe(exactMin(a[d], b[d]));
        }
      }),
      { numRuns: 1000 },
    );
  });

  it("settles an account: the reservation given back, what was spent kept but never more than was reserved, and never throws", () => {
    fc.assert(
      fc.property(budget, budget, budget, (otherHoldings, reserved, spent) => {
        // The account held the reservation on top of what its other operations hold.
        const held = addBudgets(otherHoldings, reserved);
        const after = settledHolding(held, reserved, spent);
        expect(() => toBinary(BudgetSchema, after)).not.toThrow();
        for (const d of budgetDimensions) {
          expect(after[d]).toBeLessThanOrEqual(held[d]);
          const before = held[d] > reserved[d] ? held[d] - reserved[d] : 0n;
          expect(after[d]).toBe(exactMin(before + exactMin(spent[d], reserved[d]), MAX_AMOUNT));
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("keeps what a settlement spent within the reservation exactly", () => {
    const held = create(BudgetSchema, { tokens: 1300n });
    const reserved = create(BudgetSchema, { tokens: 300n });
    expect(settledHolding(held, reserved, create(BudgetSchema, { tokens: 120n })).tokens).toBe(1120n);
    expect(settledHolding(held, reserved, create(BudgetSchema, { tokens: 100_000_000n })).tokens).toBe(1300n);
    expect(settledHolding(held, reserved, create(BudgetSchema, { tokens: MAX_AMOUNT })).tokens).toBe(1300n);
  });
});
