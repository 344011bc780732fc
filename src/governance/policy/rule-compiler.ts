// Compiles one CEL rule: parse, check that it only refers to what a rule may see, and check
// its result type by evaluating it on probe inputs. @bufbuild/cel 0.6 ships a type checker
// that does not yet handle function calls, so references are checked here, statically, over
// the syntax tree (every name is `input`, a comprehension variable or a CEL constant; every
// field selected from `input` exists in PolicyInput), and the type by the probes.
import { celEnv, isCelError, objectType, parse, plan } from "@bufbuild/cel";
import { strings } from "@bufbuild/cel/ext";
import { createRegistry, type DescMessage } from "@bufbuild/protobuf";
import { file_agentmachine_v1_policy, PolicyInputSchema, type PolicyInput } from "../../gen/agentmachine/v1/policy_pb.js";

type Expr = NonNullable<ReturnType<typeof parse>["expr"]>;

export type CompiledRule = (input: PolicyInput) => { value: boolean } | { error: string };

const env = celEnv({
  registry: createRegistry(file_agentmachine_v1_policy),
  variables: { input: objectType(PolicyInputSchema) },
  funcs: strings,
});

/** Throws an Error saying what is wrong with a reference; walks the whole tree. */
function checkReferences(expr: Expr | undefined, bound: ReadonlySet<string>): void {
  if (expr === undefined) return;
  const kind = expr.exprKind;
  switch (kind.case) {
    case "identExpr":
      if (kind.value.name !== "input" && !bound.has(kind.value.name)) throw new Error(`unknown name '${kind.value.name}': a rule sees only 'input'`);
      return;
    case "selectExpr": {
      const path = selectPath(expr);
      if (path !== undefined && path[0] === "input") checkFieldPath(PolicyInputSchema, path.slice(1));
      else checkReferences(kind.value.operand, bound);
      return;
    }
    case "callExpr":
      checkReferences(kind.value.target, bound);
      for (const arg of kind.value.args) checkReferences(arg, bound);
      return;
    case "listExpr":
      for (const element of kind.value.elements) checkReferences(element, bound);
      return;
    case "structExpr":
      for (const entry of kind.value.entries) {
        if (entry.keyKind.case === "mapKey") checkReferences(entry.keyKind.value, bound);
        checkReferences(entry.value, bound);
      }
      return;
    case "comprehensionExpr": {
      const c = kind.value;
      checkReferences(c.iterRange, bound);
      checkReferences(c.accuInit, bound);
      const inner = new Set([...bound, c.iterVar, c.iterVar2, c.accuVar].filter((name) => name !== ""));
      checkReferences(c.loopCondition, inner);
      checkReferences(c.loopStep, inner);
      checkReferences(c.result, inner);
      return;
    }
    default:
      return;
  }
}

/** `a.b.c` as ["a", "b", "c"], or undefined when the chain does not start at a name. */
function selectPath(expr: Expr): string[] | undefined {
  const kind = expr.exprKind;
  if (kind.case === "identExpr") return [kind.value.name];
  if (kind.case !== "selectExpr" || kind.value.operand === undefined) return undefined;
  const head = selectPath(kind.value.operand);
  return head && [...head, kind.value.field];
}

function checkFieldPath(message: DescMessage, path: readonly string[]): void {
  const [name, ...rest] = path;
  if (name === undefined) return;
  const field = message.fields.find((f) => f.name === name);
  if (field === undefined) throw new Error(`input has no field '${name}' (fields: ${message.fields.map((f) => f.name).join(", ")})`);
  if (field.fieldKind === "message") checkFieldPath(field.message, rest);
  // Anything selected below a map or a scalar is a map key or an error the probes report.
}

/** Compiles `source`, or throws an Error whose message says why it cannot be used. */
export function compileRule(source: string, probes: readonly PolicyInput[]): CompiledRule {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(source);
  } catch (error) {
    throw new Error(`does not parse: ${(error as Error).message.split("\n")[0]}`);
  }
  checkReferences(parsed.expr, new Set());
  const evaluate = plan(env, parsed);
  const run: CompiledRule = (input) => {
    const result = evaluate({ input });
    if (isCelError(result)) return { error: result.message };
    if (typeof result !== "boolean") return { error: `the rule gave a ${typeof result}, not a bool` };
    return { value: result };
  };
  for (const probe of probes) {
    const outcome = run(probe);
    if ("error" in outcome) throw new Error(outcome.error);
  }
  return run;
}
