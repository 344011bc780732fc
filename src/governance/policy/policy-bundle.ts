// A policy bundle as written: YAML with the profile type it governs and an ordered list of
// rules. Parsing checks the shape and compiles every rule, so a bundle either loads whole or
// is refused with the first problem named (`rules[2].when: …`).
import { createHash } from "node:crypto";
import { parse as parseYaml } from "yaml";
import type { ProfileType } from "../../gen/agentmachine/v1/types_pb.js";
import { profileTypeNames } from "../../model/mapping.js";
import { compileRule, type CompiledRule } from "./rule-compiler.js";
import { gates, probeInputs, type Gate } from "../../model/policy-gates.js";

export interface PolicyRule {
  id: string;
  gate: Gate;
  effect: "allow" | "deny";
  description: string;
  when: string;
  evaluate: CompiledRule;
}

export interface CompiledBundle {
  profileType: ProfileType;
  digest: string;
  rules: PolicyRule[];
}

/** A bundle that cannot be used; `path` names where (`rules[1].gate`). */
export class BundleError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(`${path}: ${message}`);
  }
}

const RULE_ID = /^[a-z0-9][a-z0-9._-]{0,127}$/;
const ruleKeys = new Set(["id", "gate", "effect", "description", "when"]);

export function bundleDigest(source: string): string {
  return createHash("sha256").update(source).digest("hex");
}

function profileTypeOf(name: unknown): ProfileType {
  for (const [type, spelling] of profileTypeNames) if (spelling === name) return type;
  throw new BundleError("profileType", `must be one of ${[...profileTypeNames.values()].join(", ")}`);
}

function text(value: unknown, path: string, required: boolean): string {
  if (value === undefined && !required) return "";
  if (typeof value !== "string" || (required && value.trim() === "")) throw new BundleError(path, "must be a non-empty string");
  return value;
}

function compileRuleEntry(entry: unknown, index: number, seen: Set<string>): PolicyRule {
  const at = `rules[${index}]`;
  if (typeof entry !== "object" || entry === null || Array.isArray(entry)) throw new BundleError(at, "must be a mapping");
  const fields = entry as Record<string, unknown>;
  const unknown = Object.keys(fields).find((key) => !ruleKeys.has(key));
  if (unknown !== undefined) throw new BundleError(`${at}.${unknown}`, `unknown key (allowed: ${[...ruleKeys].join(", ")})`);
  const id = text(fields.id, `${at}.id`, true);
  if (!RULE_ID.test(id)) throw new BundleError(`${at}.id`, "must be lowercase letters, digits, '.', '_' or '-'");
  if (seen.has(id)) throw new BundleError(`${at}.id`, `duplicate rule id ${id}`);
  seen.add(id);
  const gate = fields.gate as Gate;
  if (!gates.includes(gate)) throw new BundleError(`${at}.gate`, `must be one of ${gates.join(", ")}`);
  const effect = fields.effect;
  if (effect !== "allow" && effect !== "deny") throw new BundleError(`${at}.effect`, "must be allow or deny");
  const when = text(fields.when, `${at}.when`, true);
  let evaluate: CompiledRule;
  try {
    evaluate = compileRule(when, probeInputs);
  } catch (error) {
    throw new BundleError(`${at}.when`, (error as Error).message);
  }
  return { id, gate, effect, description: text(fields.description, `${at}.description`, false), when, evaluate };
}

/** Parses and compiles a bundle; throws BundleError naming the first problem. */
export function compileBundle(source: string): CompiledBundle {
  let document: unknown;
  try {
    document = parseYaml(source);
  } catch (error) {
    throw new BundleError("(document)", `not valid YAML: ${(error as Error).message.split("\n")[0]}`);
  }
  if (typeof document !== "object" || document === null || Array.isArray(document)) throw new BundleError("(document)", "must be a mapping");
  const top = document as Record<string, unknown>;
  const extra = Object.keys(top).find((key) => key !== "profileType" && key !== "rules");
  if (extra !== undefined) throw new BundleError(extra, "unknown key (allowed: profileType, rules)");
  const profileType = profileTypeOf(top.profileType);
  if (!Array.isArray(top.rules)) throw new BundleError("rules", "must be a list");
  const seen = new Set<string>();
  const rules = top.rules.map((entry, index) => compileRuleEntry(entry, index, seen));
  return { profileType, digest: bundleDigest(source), rules };
}
