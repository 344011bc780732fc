// Attenuation never widens: for all scopes, a child within its parent is accepted and one
// wider on any axis is refused, naming that axis; along a chain, every accepted link is within
// the root (transitivity), depth 1 to 8.
import { create } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BudgetSchema } from "../../src/gen/agentmachine/v1/budget_pb.js";
import { DelegationScopeSchema, type DelegationScope } from "../../src/gen/agentmachine/v1/delegation_pb.js";
import { OperationType, type ProfileType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { allows, widening } from "../../src/governance/attenuation.js";
import { posix } from "node:path";
import { budgetDimensions } from "../../src/model/budget-dimensions.js";

const types = [1, 2, 3, 4, 5, 6, 7, 8] as OperationType[];
const profileTypes = [1, 2, 3, 4, 5, 6, 7] as ProfileType[];
const names = (prefix: string) =>
  fc.uniqueArray(fc.oneof(fc.constant("*"), fc.constantFrom(...["a", "b", "c", "d"].map((n) => `${prefix}${n}`))), { maxLength: 4 });
// Paths over a small alphabet, so that prefixes of one another (`/a`, `/a/b`, `/ab`) are common.
const mountPrefixes = fc.uniqueArray(
  fc.oneof(
    fc.constant("*"),
    fc.constant("/"),
    fc.array(fc.constantFrom("a", "b", "ab"), { minLength: 1, maxLength: 3 }).map((parts) => `/${parts.join("/")}`),
  ),
  { maxLength: 4 },
);
const budget = fc.record(
  Object.fromEntries(budgetDimensions.map((d) => [d, fc.bigInt({ min: 0n, max: 1000n })])) as Record<(typeof budgetDimensions)[number], fc.Arbitrary<bigint>>,
);

const scope: fc.Arbitrary<DelegationScope> = fc
  .record({
    operationTypes: fc.uniqueArray(fc.constantFrom(...types), { maxLength: 8 }),
    profiles: names("profiles/"),
    tools: names("tool-"),
    modelProviders: names("provider-"),
    budget,
    mayDelegate: fc.boolean(),
    policyProfileTypes: fc.uniqueArray(fc.constantFrom(...profileTypes), { maxLength: 7 }),
    mountPrefixes,
  })
  .map((init) => create(DelegationScopeSchema, { ...init, budget: create(BudgetSchema, init.budget) }));

/** Whether `child` is within `parent`, by the definition (not by the code under test). */
function within(child: DelegationScope, parent: DelegationScope): boolean {
  const listWithin = (c: string[], p: string[]) => c.every((item) => (item === "*" ? p.includes("*") : allows(p, item)));
  return (
    child.operationTypes.every((t) => parent.operationTypes.includes(t)) &&
    child.policyProfileTypes.every((t) => parent.policyProfileTypes.includes(t)) &&
    listWithin(child.profiles, parent.profiles) &&
    listWithin(child.tools, parent.tools) &&
    listWithin(child.modelProviders, parent.modelProviders) &&
    // A child prefix lies under a parent's when the relative path from it does not climb out.
    child.mountPrefixes.every((c) =>
      c === "*" ? parent.mountPrefixes.includes("*") : parent.mountPrefixes.some((p) => p === "*" || !posix.relative(p, c).startsWith("..")),
    ) &&
    (!child.mayDelegate || parent.mayDelegate) &&
    budgetDimensions.every((d) => (child.budget?.[d] ?? 0n) <= (parent.budget?.[d] ?? 0n))
  );
}

describe("attenuation", () => {
  it("refuses exactly the children that are wider than their parent, on some axis", () => {
    fc.assert(
      fc.property(scope, scope, (child, parent) => {
        expect(widening(child, parent, undefined) === undefined).toBe(within(child, parent));
      }),
      { numRuns: 2000 },
    );
  });

  it("along any chain of depth 1–8, every accepted link is within the root on every axis", () => {
    fc.assert(
      fc.property(scope, fc.array(scope, { minLength: 1, maxLength: 8 }), (root, proposals) => {
        let parent = root;
        for (const proposal of proposals) {
          if (widening(proposal, parent, undefined) !== undefined) continue; // refused: the chain stays
          expect(within(proposal, parent)).toBe(true);
          expect(within(proposal, root)).toBe(true);
          parent = proposal;
        }
      }),
      { numRuns: 1000 },
    );
  });

  it("names the axis of a widening", () => {
    const parent = create(DelegationScopeSchema, {
      operationTypes: [OperationType.TOOL_GRANT_APPLY],
      profiles: ["profiles/a"],
      tools: ["git"],
      budget: { tokens: 10n },
      mountPrefixes: ["/src/app"],
    });
    const cases: [Partial<DelegationScope>, string][] = [
      [{ operationTypes: [OperationType.EXECUTION_START] }, "operation_types"],
      [{ profiles: ["profiles/b"] }, "profiles"],
      [{ profiles: ["*"] }, "profiles"],
      [{ tools: ["browser"] }, "tools"],
      [{ modelProviders: ["openai"] }, "modelProviders"],
      [{ mayDelegate: true }, "may_delegate"],
      [{ policyProfileTypes: [1 as ProfileType] }, "policy_profile_types"],
      [{ budget: create(BudgetSchema, { tokens: 11n }) }, "budget.tokens"],
      [{ mountPrefixes: ["/src/application"] }, "mount_prefixes"],
      [{ mountPrefixes: ["/src"] }, "mount_prefixes"],
      [{ mountPrefixes: ["*"] }, "mount_prefixes"],
    ];
    for (const [change, axis] of cases) {
      expect(widening(Object.assign(create(DelegationScopeSchema), change), parent, undefined)?.axis).toBe(axis);
    }
    expect(widening(create(DelegationScopeSchema, { mountPrefixes: ["/src/app", "/src/app/lib"] }), parent, undefined)).toBeUndefined();
  });
});

describe("tool patterns (server/*)", () => {
  const patterns = fc.uniqueArray(fc.constantFrom("*", "s/*", "s/a", "s/b", "s/x/*", "s/x/a", "t/*", "t/a"), { maxLength: 4 });
  const tools = ["s/a", "s/b", "s/c", "s/x/a", "s/x/b", "t/a", "t/b", "sa", "s"];

  it("`server/*` covers exactly the names below `server/`", () => {
    expect(tools.filter((tool) => allows(["s/*"], tool))).toEqual(["s/a", "s/b", "s/c", "s/x/a", "s/x/b"]);
    expect(allows(["s/a"], "s/*")).toBe(false);
    expect(allows(["s/*"], "s/*")).toBe(true);
  });

  it("a child's tools accepted within its parent's never allow a tool the parent does not", () => {
    fc.assert(
      fc.property(patterns, patterns, (child, parent) => {
        const childScope = create(DelegationScopeSchema, { tools: child });
        const parentScope = create(DelegationScopeSchema, { tools: parent });
        if (widening(childScope, parentScope, undefined) !== undefined) return;
        for (const tool of [...tools, ...child]) if (allows(child, tool)) expect(allows(parent, tool), `${tool}: ${child} within ${parent}`).toBe(true);
      }),
    );
  });
});
