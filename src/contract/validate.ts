// Contract validation: the upstream JSON schema (vendored in ./schema, MIT) is the authority,
// applied by Ajv, so we accept exactly the documents the schema accepts. This module only
// turns Ajv's errors into violations whose JSON Pointer names the offending property itself.
import { readFileSync } from "node:fs";
import { Ajv2020, type ErrorObject } from "ajv/dist/2020.js";
import type { WorkspaceOperationContract } from "../gen/agentmachine/v1/contract_pb.js";
import { contractToJson, type Json } from "../model/mapping.js";

export interface ContractViolation {
  /** JSON Pointer (RFC 6901) to the offending value or property; "" is the whole document. */
  path: string;
  message: string;
  /** The schema keyword that failed, or `json` when the text is not JSON. */
  keyword: string;
}

export interface ContractValidation {
  valid: boolean;
  violations: ContractViolation[];
}

const schema = JSON.parse(readFileSync(new URL("./schema/workspace-operation-contract.schema.json", import.meta.url), "utf8")) as object;

// allErrors: report every violation, not the first. verbose: keep the failing subschema so a
// `contains` message can say what is missing.
const checkDocument = new Ajv2020({ allErrors: true, verbose: true, strict: true }).compile(schema);

function escapePointerToken(token: string): string {
  return token.replaceAll("~", "~0").replaceAll("/", "~1");
}

function describeWanted(subschema: unknown): string {
  if (typeof subschema === "object" && subschema !== null) {
    const s = subschema as { const?: unknown; properties?: Record<string, { const?: unknown }> };
    if ("const" in s) return JSON.stringify(s.const);
    const [key, property] = Object.entries(s.properties ?? {})[0] ?? [];
    if (key !== undefined && property !== undefined && "const" in property) {
      return `an item whose ${key} is ${JSON.stringify(property.const)}`;
    }
  }
  return "a matching item";
}

function toViolation(error: ErrorObject): ContractViolation {
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case "required":
      return {
        path: `${error.instancePath}/${escapePointerToken(String(params.missingProperty))}`,
        message: "required property is missing",
        keyword: "required",
      };
    case "additionalProperties":
      return {
        path: `${error.instancePath}/${escapePointerToken(String(params.additionalProperty))}`,
        message: "property is not part of the contract",
        keyword: "additionalProperties",
      };
    case "const":
      return { path: error.instancePath, message: `must be ${JSON.stringify(params.allowedValue)}`, keyword: "const" };
    case "enum":
      return {
        path: error.instancePath,
        message: `must be one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")}`,
        keyword: "enum",
      };
    case "contains":
      return { path: error.instancePath, message: `must contain ${describeWanted(error.schema)}`, keyword: "contains" };
    default:
      return { path: error.instancePath, message: error.message ?? error.keyword, keyword: error.keyword };
  }
}

/** Validates a parsed upstream JSON document against the schema. */
export function validateContractDocument(document: unknown): ContractValidation {
  if (checkDocument(document)) return { valid: true, violations: [] };
  const seen = new Set<string>();
  const violations: ContractViolation[] = [];
  for (const error of checkDocument.errors ?? []) {
    // `allOf` only repeats what its branches already reported, and errors under `contains`
    // are Ajv trying each item: the `contains` error itself says what is missing.
    if (error.keyword === "allOf" || error.schemaPath.includes("/contains/")) continue;
    const violation = toViolation(error);
    const key = `${violation.path}\u0000${violation.keyword}\u0000${violation.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    violations.push(violation);
  }
  return { valid: false, violations };
}

/** Validates JSON text: text that is not JSON is one violation at the document root. */
export function validateContractText(text: string): ContractValidation {
  let document: Json;
  try {
    document = JSON.parse(text) as Json;
  } catch (error) {
    return {
      valid: false,
      violations: [{ path: "", message: `not valid JSON: ${(error as Error).message}`, keyword: "json" }],
    };
  }
  return validateContractDocument(document);
}

/** Validates a contract message by rendering it as the upstream document. */
export function validateContractMessage(contract: WorkspaceOperationContract): ContractValidation {
  let document: Json;
  try {
    document = contractToJson(contract);
  } catch (error) {
    return { valid: false, violations: [{ path: "", message: (error as Error).message, keyword: "type" }] };
  }
  return validateContractDocument(document);
}
