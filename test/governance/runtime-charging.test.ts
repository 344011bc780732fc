// Runtime charging, for all inputs: a charge that is allowed never takes usage past the limit
// in a charged dimension, one that would is refused naming the first such dimension, and a
// dimension warns exactly when the charge carries its usage from below 80 % of its limit to
// 80 % or more — so along any run of allowed calls, each dimension warns at most once.
import { create, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BudgetDimension, BudgetSchema, type Budget } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { CallKind, RuntimeCallSchema } from "../../src/gen/agentmachine/v1/runtime_pb.js";
import { budgetDimensions, type BudgetDimensionName } from "../../src/model/budget-dimensions.js";
import { MAX_AMOUNT } from "../../src/model/budget-math.js";
import {
  charge,
  chargedDimensions,
  costOf,
  dimensionEnum,
  exhaustionMessage,
  remainingAfter,
  reservableTokens,
} from "../../src/governance/runtime-charging.js";

const amount = (max: bigint) => fc.bigInt({ min: 0n, max });
const budgetOf = (max: bigint): fc.Arbitrary<Budget> =>
  fc
    .record(Object.fromEntries(budgetDimensions.map((d) => [d, amount(max)])) as Record<BudgetDimensionName, fc.Arbitrary<bigint>>)
    .map((init) => create(BudgetSchema, init));

/** A limit and a usage within it, in every charged dimension. */
const limitAndUsage = budgetOf(1000n).chain((limit) =>
  fc
    .record(Object.fromEntries(chargedDimensions.map((d) => [d, amount(limit[d])])) as Record<BudgetDimensionName, fc.Arbitrary<bigint>>)
    .map((usage) => ({ limit, usage: create(BudgetSchema, usage) })),
);

const call = fc
  .oneof(
    fc.record({ kind: fc.constant(CallKind.MODEL), modelProvider: fc.constant("p"), estimatedTokens: amount(300n) }),
    fc.record({ kind: fc.constant(CallKind.CONNECTOR), connector: fc.constant("c") }),
    fc.record({ kind: fc.constant(CallKind.TOOL), tool: fc.constant("t") }),
  )
  .map((init) => create(RuntimeCallSchema, init));

/** Whether `before` → `after` crosses 80 % of `limit`, by the definition (in exact arithmetic). */
const crosses = (limit: bigint, before: bigint, after: bigint) => limit > 0n && before * 5n < limit * 4n && after * 5n >= limit * 4n;

describe("charge", () => {
  it("adds the cost and takes the refund back, never below zero, in every dimension", () => {
    fc.assert(
      fc.property(budgetOf(1n << 40n), budgetOf(1000n), budgetOf(1000n), budgetOf(1000n), (limit, usage, add, refund) => {
        const result = charge(limit, usage, add, refund);
        for (const d of budgetDimensions) {
          const expected = usage[d] + add[d] - refund[d];
          expect(result.usage[d]).toBe(expected > 0n ? expected : 0n);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("allows a charge only if no charged dimension goes past its limit, and otherwise names the first that would", () => {
    fc.assert(
      fc.property(limitAndUsage, budgetOf(400n), ({ limit, usage }, add) => {
        const result = charge(limit, usage, add);
        const over = chargedDimensions.filter((d) => usage[d] + add[d] > limit[d]);
        if (over.length === 0) {
          expect(result.kind).toBe("within");
          for (const d of chargedDimensions) expect(result.usage[d]).toBeLessThanOrEqual(limit[d]);
        } else {
          expect(result).toMatchObject({ kind: "exhausted", dimension: over[0] });
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("warns for exactly the charged dimensions whose usage crosses 80 % of a non-zero limit, with the usage and the limit", () => {
    fc.assert(
      fc.property(limitAndUsage, budgetOf(400n), budgetOf(400n), ({ limit, usage }, add, refund) => {
        const result = charge(limit, usage, add, refund);
        if (result.kind !== "within") return;
        const expected = chargedDimensions.filter((d) => crosses(limit[d], usage[d], result.usage[d]));
        expect(result.warnings.map((w) => ({ dimension: w.dimension, used: w.used, limit: w.limit }))).toEqual(
          expected.map((d) => ({ dimension: dimensionEnum(d), used: result.usage[d], limit: limit[d] })),
        );
      }),
      { numRuns: 2000 },
    );
  });

  it("along any run of calls from zero, allowed ones never take usage past the limit, and each dimension warns once if and only if it ends at 80 % or more", () => {
    fc.assert(
      fc.property(budgetOf(60n), fc.array(call, { maxLength: 80 }), (limit, calls) => {
        let usage = create(BudgetSchema);
        const warned = new Map<BudgetDimension, number>();
        let allowedModelCalls = 0n;
        for (const next of calls) {
          const result = charge(limit, usage, costOf(next));
          if (result.kind === "exhausted") continue; // refused: charges nothing
          usage = result.usage;
          if (next.kind === CallKind.MODEL) allowedModelCalls += 1n;
          for (const warning of result.warnings) warned.set(warning.dimension, (warned.get(warning.dimension) ?? 0) + 1);
          for (const d of chargedDimensions) expect(usage[d]).toBeLessThanOrEqual(limit[d]);
        }
        expect(allowedModelCalls).toBeLessThanOrEqual(limit.modelCalls);
        for (const d of chargedDimensions) {
          const endsHigh = limit[d] > 0n && usage[d] * 5n >= limit[d] * 4n;
          expect(warned.get(dimensionEnum(d)) ?? 0).toBe(endsHigh ? 1 : 0);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it("warns at exactly 80 %, not a token before", () => {
    const limit = create(BudgetSchema, { tokens: 1000n, modelCalls: 100n });
    const below = charge(limit, create(BudgetSchema, { tokens: 700n }), create(BudgetSchema, { tokens: 99n }));
    expect(below).toMatchObject({ kind: "within", warnings: [] });
    const at = charge(limit, create(BudgetSchema, { tokens: 799n }), create(BudgetSchema, { tokens: 1n }));
    expect(at).toMatchObject({ kind: "within", warnings: [{ dimension: BudgetDimension.TOKENS, used: 800n, limit: 1000n }] });
    const already = charge(limit, create(BudgetSchema, { tokens: 800n }), create(BudgetSchema, { tokens: 1n }));
    expect(already).toMatchObject({ kind: "within", warnings: [] });
  });

  it("allows a charge that uses the budget up exactly, and refuses one unit more", () => {
    const limit = create(BudgetSchema, { connectorCalls: 3n });
    expect(charge(limit, create(BudgetSchema, { connectorCalls: 2n }), create(BudgetSchema, { connectorCalls: 1n })).kind).toBe("within");
    expect(charge(limit, create(BudgetSchema, { connectorCalls: 3n }), create(BudgetSchema, { connectorCalls: 1n }))).toMatchObject({
      kind: "exhausted",
      dimension: "connectorCalls",
    });
  });

  it("checks only the dimensions charged at runtime: the executor measures the others", () => {
    const limit = create(BudgetSchema, { modelCalls: 10n, tokens: 10n, connectorCalls: 10n });
    const result = charge(limit, undefined, create(BudgetSchema, { wallClockSeconds: 99n, sandboxMemoryBytes: 99n }));
    expect(result.kind).toBe("within");
  });

  it("never throws and always gives a usage that encodes, for any amounts up to 2^64−1", () => {
    fc.assert(
      fc.property(budgetOf(MAX_AMOUNT), budgetOf(MAX_AMOUNT), budgetOf(MAX_AMOUNT), budgetOf(MAX_AMOUNT), (limit, usage, add, refund) => {
        const result = charge(limit, usage, add, refund);
        expect(() => toBinary(BudgetSchema, result.usage)).not.toThrow();
      }),
      { numRuns: 500 },
    );
  });

  it("names the limit it exhausts; a recorded usage's stop cause says how far over it went", () => {
    const over = charge(create(BudgetSchema, { tokens: 300n }), create(BudgetSchema, { tokens: 100n }), create(BudgetSchema, { tokens: 99_999_900n }));
    expect(over).toMatchObject({ kind: "exhausted", dimension: "tokens", limit: 300n });
    if (over.kind !== "exhausted") return;
    expect(exhaustionMessage(over, false)).toBe("tokens budget exhausted");
    expect(exhaustionMessage(over, true)).toBe(
      "tokens budget exhausted: 100000000 reported against a budget of 300, 99999700 over; its delegations and profile are charged the 300 only",
    );
  });
});

describe("costOf", () => {
  it("charges a model call one model call and its estimated tokens, a connector or tool call one connector call", () => {
    const costs = [
      costOf(create(RuntimeCallSchema, { kind: CallKind.MODEL, modelProvider: "p", estimatedTokens: 42n })),
      costOf(create(RuntimeCallSchema, { kind: CallKind.CONNECTOR, connector: "c", estimatedTokens: 42n })),
      costOf(create(RuntimeCallSchema, { kind: CallKind.TOOL, tool: "t" })),
    ];
    expect(costs.map((c) => [c.modelCalls, c.tokens, c.connectorCalls])).toEqual([
      [1n, 42n, 0n],
      [0n, 0n, 1n],
      [0n, 0n, 1n],
    ]);
  });
});

describe("dimensionEnum and remainingAfter", () => {
  it("names each Budget field by its BudgetDimension, in contract order", () => {
    expect(chargedDimensions.map(dimensionEnum)).toEqual([BudgetDimension.MODEL_CALLS, BudgetDimension.TOKENS, BudgetDimension.CONNECTOR_CALLS]);
    expect(budgetDimensions.map((d) => BudgetDimension[dimensionEnum(d)])).toEqual([
      "MODEL_CALLS",
      "TOKENS",
      "CONNECTOR_CALLS",
      "CPU_GPU_COMPUTE_SECONDS",
      "LOCAL_DISK_BYTES",
      "SANDBOX_MEMORY_BYTES",
      "WALL_CLOCK_SECONDS",
      "AGENT_CONCURRENCY",
    ]);
  });

  it("leaves the limit less the usage, never below zero", () => {
    fc.assert(
      fc.property(budgetOf(1000n), budgetOf(1000n), (limit, usage) => {
        const remaining = remainingAfter(limit, usage);
        for (const d of budgetDimensions) expect(remaining[d]).toBe(limit[d] > usage[d] ? limit[d] - usage[d] : 0n);
      }),
    );
  });
});

describe("reservableTokens", () => {
  it("reserves at most what was asked, never so much that the call's charge crosses the 80 % line, and all of it when it fits", () => {
    fc.assert(
      fc.property(amount(10_000n), amount(12_000n), amount(500n), amount(5000n), (limit, used, need, ahead) => {
        const reserved = reservableTokens(limit, used, need, ahead);
        expect(reserved >= 0n && reserved <= ahead).toBe(true);
        const next = used + need + reserved;
        if (reserved > 0n) expect(next * 5n < limit * 4n).toBe(true);
        if (reserved < ahead) expect((next + 1n) * 5n >= limit * 4n).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it("reserves nothing from a zero budget or once the line is reached", () => {
    expect(reservableTokens(0n, 0n, 0n, 10n)).toBe(0n);
    expect(reservableTokens(1000n, 700n, 0n, 500n)).toBe(99n);
    expect(reservableTokens(1000n, 700n, 99n, 500n)).toBe(0n);
    expect(reservableTokens(1000n, 900n, 1n, 500n)).toBe(0n);
  });
});
