// Contract validation accepts exactly what the upstream schema accepts. The mutation tables
// are derived from the schema itself (walked alongside the upstream example), so every
// required property, every const, every enum value and every closed object is covered.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { validateContractDocument, validateContractText } from "../../src/contract/validate.js";
import { repoRoot } from "../helpers/server.js";

type Node = Record<string, unknown>;
const schema = JSON.parse(readFileSync(join(repoRoot, "src/contract/schema/workspace-operation-contract.schema.json"), "utf8")) as Node;
const exampleText = readFileSync(join(repoRoot, "examples/contracts/local-execution.json"), "utf8");
const example = (): Node => JSON.parse(exampleText) as Node;

function resolve(node: Node): Node {
  const ref = node.$ref as string | undefined;
  if (ref === undefined) return node;
  return (schema.$defs as Node)[ref.replace("#/$defs/", "")] as Node;
}

interface Site {
  pointer: string;
  schema: Node;
  value: unknown;
}

/** Every value in the example with the schema that governs it. */
function sites(node: Node = schema, value: unknown = example(), pointer = ""): Site[] {
  const s = resolve(node);
  const out: Site[] = [{ pointer, schema: s, value }];
  if (s.type === "object" && s.properties !== undefined) {
    for (const [key, child] of Object.entries(s.properties as Node)) {
      if (value !== null && typeof value === "object" && key in value) {
        out.push(...sites(child as Node, (value as Node)[key], `${pointer}/${key}`));
      }
    }
  }
  if (s.type === "array" && Array.isArray(value)) {
    for (const [index, item] of value.entries()) out.push(...sites(s.items as Node, item, `${pointer}/${index}`));
  }
  return out;
}

function setAt(document: Node, pointer: string, mutate: (parent: Node | unknown[], key: string) => void): Node {
  const keys = pointer.split("/").slice(1);
  let parent: unknown = document;
  for (const key of keys.slice(0, -1)) parent = (parent as Node)[key];
  mutate(parent as Node, keys[keys.length - 1]!);
  return document;
}

const allSites = sites();
const requiredCases = allSites.flatMap((site) => ((site.schema.required as string[] | undefined) ?? []).map((key) => `${site.pointer}/${key}`));
const constCases = allSites.filter((site) => "const" in site.schema);
const enumCases = allSites.filter((site) => Array.isArray(site.schema.enum));
const closedObjects = allSites.filter((site) => site.schema.additionalProperties === false);
const containsCases = allSites.flatMap((site) =>
  ((site.schema.allOf as Node[] | undefined) ?? [])
    .map((branch) => branch.contains as Node | undefined)
    .filter((contains): contains is Node => contains !== undefined)
    .map((contains) => ({ pointer: site.pointer, contains })),
);

function expectViolation(document: Node, path: string, keyword: string): void {
  const result = validateContractDocument(document);
  expect(result.valid).toBe(false);
  expect(result.violations).toContainEqual(expect.objectContaining({ path, keyword }));
}

describe("contract validation", () => {
  it("accepts the upstream example", () => {
    expect(validateContractText(exampleText)).toEqual({ valid: true, violations: [] });
  });

  it("derives a table that covers the whole schema", () => {
    // If the walk silently found nothing the tables below would pass vacuously.
    expect(requiredCases.length).toBeGreaterThanOrEqual(60);
    expect(constCases.length).toBeGreaterThanOrEqual(20);
    expect(enumCases.length).toBeGreaterThanOrEqual(30);
    expect(closedObjects.length).toBeGreaterThanOrEqual(25);
    expect(containsCases.length).toBe(8 + 7 + 6 + 6 + 2);
  });

  it.each(requiredCases)("removing required %s is reported at that path", (pointer) => {
    expectViolation(
      setAt(example(), pointer, (parent, key) => delete (parent as Node)[key]),
      pointer,
      "required",
    );
  });

  it.each(constCases.map((site) => [site.pointer, site.schema.const] as const))("flipping const %s (%j) is reported at that path", (pointer, constant) => {
    const flipped = typeof constant === "boolean" ? !constant : `${String(constant)}-flipped`;
    expectViolation(
      setAt(example(), pointer, (parent, key) => ((parent as Node)[key] = flipped)),
      pointer,
      "const",
    );
  });

  it.each(enumCases.map((site) => [site.pointer, site.value] as const))("misspelling enum value %s (%j) is reported at that path", (pointer, value) => {
    const misspelled = String(value).replace(/_/, "-").toUpperCase();
    expectViolation(
      setAt(example(), pointer, (parent, key) => ((parent as Node)[key] = misspelled)),
      pointer,
      "enum",
    );
  });

  it.each(closedObjects.map((site) => site.pointer))("an extra property in object %s is reported at that property", (pointer) => {
    const document = example();
    const target = pointer === "" ? document : (sites(schema, document).find((s) => s.pointer === pointer)!.value as Node);
    target.unexpectedField = 1;
    expectViolation(document, `${pointer}/unexpectedField`, "additionalProperties");
  });

  it.each(containsCases.map(({ pointer, contains }) => [pointer, JSON.stringify(contains)] as const))(
    "leaving out a required item of %s (%s) is reported at the array",
    (pointer, containsJson) => {
      const contains = JSON.parse(containsJson) as Node;
      const matches = (item: unknown): boolean =>
        "const" in contains
          ? item === contains.const
          : Object.entries(contains.properties as Node).every(([key, rule]) => (item as Node)[key] === (rule as Node).const);
      const document = setAt(example(), pointer, (parent, key) => {
        const array = (parent as Node)[key] as unknown[];
        (parent as Node)[key] = array.filter((item) => !matches(item));
      });
      expectViolation(document, pointer, "contains");
    },
  );

  it.each([
    ["/supportedOperationTypes", "uniqueItems"],
    ["/profiles/supported", "uniqueItems"],
    ["/artifacts/requiredArtifacts", "uniqueItems"],
  ])("a duplicate in %s is reported", (pointer, keyword) => {
    const document = setAt(example(), pointer, (parent, key) => {
      const array = (parent as Node)[key] as unknown[];
      array.push(array[0]);
    });
    expectViolation(document, pointer, keyword);
  });

  it.each([
    ["/id", "urn:srcos:agent-machine:workspace-operation-contract:Upper", "pattern"],
    ["/id", "urn:srcos:agent-machine:workspace-operation-contract:", "pattern"],
    ["/controls/budget/tokens", -1, "minimum"],
    ["/controls/budget/tokens", 1.5, "type"],
    ["/controls/budget/tokens", "160000", "type"],
    ["/artifacts/localAgentExecution/budget/agentConcurrency", null, "type"],
    ["/workspaceOperation/commandRef", 7, "type"],
    ["/controls/operationEvents/0/at", false, "type"],
    ["/artifacts/modelProviderBinding/profileType", "personal", "enum"],
  ] as const)("%s = %j is reported as %s", (pointer, value, keyword) => {
    expectViolation(
      setAt(example(), pointer, (parent, key) => ((parent as Node)[key] = value)),
      pointer,
      keyword,
    );
  });

  it.each([
    ["/controls/budget/tokens", 0],
    ["/controls/budget/localDiskBytes", 2 ** 53 - 1],
    ["/controls/budget/tokens", 5.0],
    ["/controls/operationEvents/0/details", ""],
    ["/workspaceOperation/operationId", ""],
  ] as const)("accepts what the schema allows: %s = %j", (pointer, value) => {
    const document = setAt(example(), pointer, (parent, key) => ((parent as Node)[key] = value));
    expect(validateContractDocument(document)).toEqual({ valid: true, violations: [] });
  });

  it("accepts an event without the optional details", () => {
    const document = setAt(example(), "/controls/operationEvents/0/details", (parent, key) => delete (parent as Node)[key]);
    expect(validateContractDocument(document).valid).toBe(true);
  });

  it.each([["not json"], [""], ["[]"], ["null"], ['"a string"'], ["42"]])("rejects the non-contract text %j at the root", (text) => {
    const result = validateContractText(text);
    expect(result.valid).toBe(false);
    expect(result.violations[0]?.path).toBe("");
  });

  it("escapes JSON-Pointer tokens of unexpected property names", () => {
    const document = example();
    document["a/b~c"] = true;
    expectViolation(document, "/a~1b~0c", "additionalProperties");
  });
});
