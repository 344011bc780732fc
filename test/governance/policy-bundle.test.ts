// Policy bundles without a server: every shipped bundle compiles; a bundle that cannot be used
// is refused whole, naming where (`rules[1].when`); and a gate is decided by the rules of the
// bundle as the contract says: an allow must match and no deny may, anything else denies.
import { PolicyGate } from "../../src/gen/agentmachine/v1/types_pb.js";
import { readdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { PolicyInputSchema } from "../../src/gen/agentmachine/v1/policy_pb.js";
import { profileTypeNames } from "../../src/model/mapping.js";
import { BundleError, compileBundle } from "../../src/governance/policy/policy-bundle.js";
import { policyGates, type Gate } from "../../src/model/policy-gates.js";
import { decideGate } from "../../src/governance/policy/policy-engine.js";
import { bundleSource, sha256, type RuleInit } from "../helpers/policy.js";
import { repoRoot } from "../helpers/temp-dir.js";

const shipped = ["examples/policies", "test/fixtures/policies"].flatMap((dir) =>
  readdirSync(join(repoRoot, dir))
    .filter((file) => file.endsWith(".yaml"))
    .map((file) => join(dir, file)),
);

/** The error compileBundle throws for `source`; fails the test if it compiles. */
function refusal(source: string): BundleError {
  try {
    compileBundle(source);
  } catch (error) {
    if (error instanceof BundleError) return error;
    throw error;
  }
  throw new Error(`expected the bundle to be refused:\n${source}`);
}

const good: RuleInit = { id: "good", gate: "toolGrant", effect: "allow", when: 'input.tool == "git"' };
/** A personal bundle whose second rule is `rule`, so a refusal must name rules[1]. */
const secondRule = (rule: Record<string, unknown>) => bundleSource("personal", [good, rule as unknown as RuleInit]);
const withWhen = (when: unknown) => secondRule({ id: "bad", gate: "toolGrant", effect: "allow", when });

describe("compileBundle", () => {
  it("finds the shipped bundles to check", () => {
    expect(shipped.filter((path) => path.startsWith("examples/"))).toHaveLength(profileTypeNames.size);
    expect(shipped.filter((path) => path.startsWith("test/"))).toHaveLength(profileTypeNames.size);
  });

  it.each(shipped)("accepts %s, governing the profile type it is named after, with the digest of its source", (path) => {
    const source = readFileSync(join(repoRoot, path), "utf8");
    const bundle = compileBundle(source);
    expect(profileTypeNames.get(bundle.profileType)).toBe(basename(path, ".yaml"));
    expect(bundle.rules.length).toBeGreaterThan(0);
    expect(bundle.digest).toBe(sha256(source));
  });

  it.each([
    ["text that is not YAML", "profileType: personal\nrules: [", "(document)", "not valid YAML"],
    ["a document that is not a mapping", "- personal\n- rules\n", "(document)", "must be a mapping"],
    ["an unknown top-level key", "profileType: personal\nversion: 2\nrules: []\n", "version", "unknown key"],
    ["an unknown profileType", "profileType: cloud\nrules: []\n", "profileType", "must be one of personal, corporate_firewall"],
    ["a missing profileType", "rules: []\n", "profileType", "must be one of"],
    ["rules that are not a list", "profileType: personal\nrules:\n  id: r\n", "rules", "must be a list"],
    ["a rule that is not a mapping", bundleSource("personal", [good, "allow git" as unknown as RuleInit]), "rules[1]", "must be a mapping"],
    ["an unknown rule key", secondRule({ ...good, id: "other", priority: 1 }), "rules[1].priority", "unknown key"],
    ["a missing rule id", secondRule({ gate: "toolGrant", effect: "allow", when: "true" }), "rules[1].id", "must be a non-empty string"],
    ["a rule id with capitals and spaces", secondRule({ ...good, id: "Allow Git" }), "rules[1].id", "lowercase letters"],
    ["a rule id that starts with punctuation", secondRule({ ...good, id: "-git" }), "rules[1].id", "lowercase letters"],
    ["a duplicate rule id", secondRule({ ...good, when: "true" }), "rules[1].id", "duplicate rule id good"],
    ["an unknown gate", secondRule({ ...good, id: "other", gate: "tools" }), "rules[1].gate", "must be one of toolGrant"],
    ["a bad effect", secondRule({ ...good, id: "other", effect: "permit" }), "rules[1].effect", "must be allow or deny"],
    ["an empty when", withWhen(""), "rules[1].when", "must be a non-empty string"],
    ["a when of only spaces", withWhen("   "), "rules[1].when", "must be a non-empty string"],
    ["a when that is a YAML boolean, not CEL text", withWhen(true), "rules[1].when", "must be a non-empty string"],
    ["CEL that does not parse", withWhen("input.tool =="), "rules[1].when", "does not parse"],
    ["an unknown name", withWhen("foo.bar"), "rules[1].when", "unknown name 'foo'"],
    ["an unknown name inside a call", withWhen("input.tool.startsWith(prefix)"), "rules[1].when", "unknown name 'prefix'"],
    ["an unknown input field", withWhen('input.tol == "git"'), "rules[1].when", "input has no field 'tol'"],
    ["a type error", withWhen("input.tool + 1"), "rules[1].when", "no matching overload"],
    ["a result that is not a bool", withWhen("input.tool"), "rules[1].when", "not a bool"],
  ])("refuses %s, naming the path", (_what, source, path, message) => {
    const error = refusal(source);
    expect(error.path).toBe(path);
    expect(error.message.startsWith(`${path}: `)).toBe(true);
    expect(error.message).toContain(message);
  });

  it("accepts comprehension variables and the strings extension", () => {
    const bundle = compileBundle(
      bundleSource("personal", [
        { id: "c", gate: "toolGrant", effect: "allow", when: 'input.labels.exists(k, k.startsWith("team-")) && input.tool.lowerAscii() == "git"' },
      ]),
    );
    expect(bundle.rules.map((rule) => rule.id)).toEqual(["c"]);
  });
});

describe("decideGate", () => {
  const source = bundleSource("personal", [
    { id: "allow-git", gate: "toolGrant", effect: "allow", when: 'input.tool == "git"', description: "git, by name" },
    { id: "allow-tools", gate: "toolGrant", effect: "allow", when: 'input.tool in ["git", "rg", "curl"]', description: "a short list" },
    { id: "deny-curl", gate: "toolGrant", effect: "deny", when: 'input.tool == "curl"', description: "never curl" },
    // Compiles (every probe input has the label `probe`), but errors on an input without it.
    { id: "needs-probe-label", gate: "modelProviderUse", effect: "allow", when: 'input.labels["probe"] == "yes"' },
    { id: "ollama", gate: "modelProviderUse", effect: "allow", when: 'input.model_provider == "ollama"' },
    { id: "deny-unlabelled-network", gate: "networkProfile", effect: "deny", when: 'input.labels["probe"] != "yes"' },
    { id: "allow-network", gate: "networkProfile", effect: "allow", when: "true" },
  ]);
  const bundle = compileBundle(source);
  const input = (init: { tool?: string; modelProvider?: string; labels?: Record<string, string> }) =>
    create(PolicyInputSchema, { profileType: "personal", ...init });

  it.each<[string, Gate, ReturnType<typeof input>, boolean, string, string]>([
    ["an allow rule matches: the first matching allow decides", "toolGrant", input({ tool: "git" }), true, "allow-git", "git, by name"],
    ["a later allow rule matches", "toolGrant", input({ tool: "rg" }), true, "allow-tools", "a short list"],
    ["a deny rule matches: it overrides an earlier allow", "toolGrant", input({ tool: "curl" }), false, "deny-curl", "never curl"],
    ["no allow rule matches", "toolGrant", input({ tool: "wget" }), false, "no-matching-allow", "no allow rule of the toolGrant gate matched"],
    [
      "only rules of other gates would match",
      "artifactAccess",
      input({ tool: "git" }),
      false,
      "no-matching-allow",
      "no allow rule of the artifactAccess gate matched",
    ],
    [
      "a rule errors: denied, naming that rule, even though a later allow matches",
      "modelProviderUse",
      input({ modelProvider: "ollama" }),
      false,
      "needs-probe-label",
      "evaluation error",
    ],
    [
      "the same rule evaluates without error",
      "modelProviderUse",
      input({ modelProvider: "ollama", labels: { probe: "yes" } }),
      true,
      "needs-probe-label",
      "an allow rule matched",
    ],
    ["a deny rule errors after nothing matched", "networkProfile", input({}), false, "deny-unlabelled-network", "evaluation error"],
    [
      "a rule of another gate would error on this input: it is not evaluated",
      "toolGrant",
      input({ tool: "git", labels: {} }),
      true,
      "allow-git",
      "git, by name",
    ],
  ])("%s", (_case, gate, policyInput, allowed, rule, reason) => {
    const decision = decideGate(bundle, gate, policyInput);
    expect(decision).toMatchObject({ gate: policyGates.get(gate), allowed, rule, bundleDigest: sha256(source) });
    expect(decision.reason.startsWith(reason)).toBe(true);
  });

  it("denies every gate with rule missing-bundle when no bundle governs the profile type, naming no digest", () => {
    const decision = decideGate(undefined, "toolGrant", input({ tool: "git" }));
    expect(decision).toMatchObject({ gate: PolicyGate.TOOL_GRANT, allowed: false, rule: "missing-bundle", bundleDigest: "" });
    expect(decision.reason).toContain("personal");
  });

  it("names the digest of the bundle source that decided, byte for byte", () => {
    const other = `# the same rules, another source\n${source}`;
    expect(decideGate(compileBundle(other), "toolGrant", input({ tool: "git" })).bundleDigest).toBe(sha256(other));
    expect(sha256(other)).not.toBe(sha256(source));
  });
});
