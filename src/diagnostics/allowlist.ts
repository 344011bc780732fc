// The first line of redaction: a message goes into a bundle only through an allowlist of its
// fields. A field that is not listed — including every field added to the API later, until
// someone decides it is safe and lists it here — reads "[redacted]" whatever it holds.
//
// What is listed, and why it is safe: resource names and ids the server made (operations,
// delegations, profiles, policy bundles), enums, numbers, times, budgets and usage, booleans,
// digests, the machine-readable stop reason (only if it has the shape of one), the names a
// client chose for tools, providers, images, labels and environment variables (the keys of
// labels and env, never their values) and a provider endpoint's origin (scheme, host and port:
// no userinfo, path or query). What is not: every free text a client or a process wrote
// (argv, env values, working directories, display names, reasons, label values, progress and
// completion messages, stop-cause messages), request ids, policy rule reasons and bundle
// sources, who applied a bundle, and the container command line.
import type { DescField, DescMessage, JsonObject, JsonValue } from "@bufbuild/protobuf";
import { StopReasonSchema } from "../gen/agentmachine/v1/operation_pb.js";
import { REDACTED } from "./detector.js";

/**
 * keep: verbatim (a message field is projected through its own type's allowlist);
 * keys: a map's keys verbatim and every value redacted;
 * a RegExp: a string kept only if all of it matches, else redacted;
 * a function: a value derived from the field's JSON value.
 */
export type Rule = "keep" | "keys" | RegExp | ((value: JsonValue) => JsonValue);

export type Allowlist = Readonly<Record<string, Readonly<Record<string, Rule>>>>;

/** A URL's scheme, host and port; anything that does not parse as a URL is redacted. */
export function urlOrigin(value: JsonValue): JsonValue {
  if (typeof value !== "string") return REDACTED;
  try {
    const url = new URL(value);
    return url.host === "" ? REDACTED : `${url.protocol}//${url.host}`;
  } catch {
    return REDACTED;
  }
}

const stopReasonNames = new Set(StopReasonSchema.values.map((value) => value.name));

/** A stop reason kept only as one of the enum's names: a JSON value from elsewhere may hold any text. */
function stopReason(value: JsonValue): JsonValue {
  return typeof value === "string" && stopReasonNames.has(value) ? value : REDACTED;
}

const keepAll = (...fields: string[]): Record<string, Rule> => Object.fromEntries(fields.map((field) => [field, "keep" as const]));

export const operationAllowlist: Allowlist = {
  "agentmachine.v1.Operation": {
    ...keepAll("name", "type", "profile", "spec", "requested_budget", "state", "attempt", "artifact", "stop_cause", "delegation", "policy_decisions", "usage"),
    ...keepAll("create_time", "start_time", "end_time", "last_sequence", "runner"),
    labels: "keys",
  },
  "agentmachine.v1.OperationSpec": keepAll(
    "profile_create",
    "execution_start",
    "execution_cancel",
    "tool_grant_apply",
    "tool_grant_revoke",
    "container_run",
    "model_provider_bind",
    "diagnostics_export",
  ),
  "agentmachine.v1.ProfileCreateSpec": keepAll("profile_id", "profile_type", "budget"),
  "agentmachine.v1.ExecutionStartSpec": { env: "keys", retry_policy: "keep" },
  "agentmachine.v1.ExecutionCancelSpec": keepAll("target"),
  "agentmachine.v1.ToolGrantApplySpec": keepAll("tool"),
  "agentmachine.v1.ToolGrantRevokeSpec": keepAll("grant"),
  "agentmachine.v1.ContainerRunSpec": { image: "keep", env: "keys", network: "keep" },
  "agentmachine.v1.ModelProviderBindSpec": { provider: "keep", endpoint: urlOrigin },
  "agentmachine.v1.DiagnosticsExportSpec": keepAll("recent_operations"),
  "agentmachine.v1.RetryPolicy": keepAll("max_attempts", "initial_backoff", "max_backoff"),
  "agentmachine.v1.Budget": keepAll(
    "model_calls",
    "tokens",
    "connector_calls",
    "cpu_gpu_compute_seconds",
    "local_disk_bytes",
    "sandbox_memory_bytes",
    "wall_clock_seconds",
    "agent_concurrency",
  ),
  "agentmachine.v1.StopCause": { reason: stopReason, dimension: "keep" },
  "agentmachine.v1.PolicyDecision": keepAll("gate", "rule", "bundle_digest", "allowed"),
  "agentmachine.v1.Artifact": keepAll(
    "agent_machine_profile",
    "local_agent_execution",
    "tool_grant_record",
    "container_execution_record",
    "model_provider_binding",
    "agent_machine_diagnostic_bundle",
  ),
  "agentmachine.v1.AgentMachineProfile": keepAll("name", "profile_type"),
  "agentmachine.v1.LocalAgentExecution": keepAll(
    "delegation_ref",
    "budget",
    "usage",
    "exit_code",
    "stdout_bytes",
    "stderr_bytes",
    "output_truncated",
    "process_id",
    "process_start_ticks",
  ),
  "agentmachine.v1.ToolGrantRecord": keepAll("tool", "apply_command_ref", "revoke_command_ref"),
  "agentmachine.v1.ContainerExecutionRecord": keepAll(
    "operation_type",
    "image_digest",
    "exit_code",
    "usage",
    "stdout_bytes",
    "stderr_bytes",
    "output_truncated",
  ),
  "agentmachine.v1.ModelProviderBinding": keepAll("operation_type", "profile_type", "policy_gate_ref", "provider"),
  "agentmachine.v1.AgentMachineDiagnosticBundle": keepAll(
    "operation_type",
    "credentials_included",
    "tokens_included",
    "local_secrets_included",
    "sensitive_prompts_included",
    "sha256",
    "size_bytes",
  ),
  "agentmachine.v1.OperationEvent": keepAll(
    "sequence",
    "operation",
    "type",
    "state",
    "time",
    "attempt",
    "start",
    "progress",
    "failure",
    "retry",
    "cancel",
    "complete",
  ),
  "agentmachine.v1.StartAttributes": keepAll("policy_decisions"),
  "agentmachine.v1.ProgressAttributes": keepAll("percent", "budget_warnings"),
  "agentmachine.v1.BudgetWarning": keepAll("dimension", "used", "limit"),
  "agentmachine.v1.FailureAttributes": keepAll("cause"),
  "agentmachine.v1.RetryAttributes": keepAll("delay", "cause"),
  "agentmachine.v1.CancelAttributes": keepAll("cause"),
  "agentmachine.v1.CompleteAttributes": {},
  "agentmachine.v1.PolicyBundle": keepAll("name", "profile_type", "version", "digest", "apply_time"),
};

/** Counts what the allowlist replaced, for the manifest. */
export interface AllowlistTally {
  redactedFields: number;
}

function isObject(value: JsonValue): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Projects the proto JSON of a `desc` message (as toJson writes it) through `allowlist`.
 * Listed fields keep their value; every other field that is present reads "[redacted]".
 */
export function project(desc: DescMessage, json: JsonValue, allowlist: Allowlist, tally: AllowlistTally): JsonValue {
  if (desc.typeName.startsWith("google.protobuf.")) return json; // Timestamp, Duration: a time, nothing else
  if (!isObject(json)) return json;
  const rules = allowlist[desc.typeName] ?? {};
  const out: JsonObject = {};
  for (const [key, value] of Object.entries(json)) {
    const field = desc.fields.find((f) => f.jsonName === key || f.name === key);
    const rule = field === undefined ? undefined : rules[field.name];
    out[key] = field === undefined || rule === undefined ? redact(tally) : apply(field, rule, value, allowlist, tally);
  }
  return out;
}

function redact(tally: AllowlistTally): JsonValue {
  tally.redactedFields += 1;
  return REDACTED;
}

function apply(field: DescField, rule: Rule, value: JsonValue, allowlist: Allowlist, tally: AllowlistTally): JsonValue {
  if (typeof rule === "function") return rule(value);
  if (rule instanceof RegExp) return typeof value === "string" && rule.test(value) ? value : redact(tally);
  if (rule === "keys") {
    if (!isObject(value)) return redact(tally);
    return Object.fromEntries(Object.keys(value).map((key) => [key, redact(tally)]));
  }
  switch (field.fieldKind) {
    case "message":
      return project(field.message, value, allowlist, tally);
    case "list":
      return field.listKind === "message" && Array.isArray(value) ? value.map((item) => project(field.message, item, allowlist, tally)) : value;
    case "map":
      return field.mapKind === "message" && isObject(value)
        ? Object.fromEntries(Object.entries(value).map(([key, item]) => [key, project(field.message, item, allowlist, tally)]))
        : value;
    default:
      return value;
  }
}
