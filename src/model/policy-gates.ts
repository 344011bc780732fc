// The five policy gates and what each one concerns. This table is the one place that says
// which gates decide an operation or a runtime call.
import { create } from "@bufbuild/protobuf";
import { PolicyInputSchema, type PolicyInput } from "../gen/agentmachine/v1/policy_pb.js";
import type { OperationSpec } from "../gen/agentmachine/v1/operation_pb.js";
import { CallKind, type RuntimeCall } from "../gen/agentmachine/v1/runtime_pb.js";
import { PolicyGate } from "../gen/agentmachine/v1/types_pb.js";

/** The gates as bundles and rules spell them (the contract's spelling). */
export const gates = ["toolGrant", "modelProviderUse", "networkProfile", "containerExecution", "artifactAccess"] as const;
export type Gate = (typeof gates)[number];

/** Each gate's value in the API (PolicyDecision.gate, AuditDecision.gates). */
export const policyGates: ReadonlyMap<Gate, PolicyGate> = new Map([
  ["toolGrant", PolicyGate.TOOL_GRANT],
  ["modelProviderUse", PolicyGate.MODEL_PROVIDER_USE],
  ["networkProfile", PolicyGate.NETWORK_PROFILE],
  ["containerExecution", PolicyGate.CONTAINER_EXECUTION],
  ["artifactAccess", PolicyGate.ARTIFACT_ACCESS],
]);

/** A gate's spelling, from its API value; empty for UNSPECIFIED. */
export function gateName(gate: PolicyGate): Gate | "" {
  return gates.find((name) => policyGates.get(name) === gate) ?? "";
}

export const callKindNames: ReadonlyMap<CallKind, string> = new Map([
  [CallKind.MODEL, "model"],
  [CallKind.CONNECTOR, "connector"],
  [CallKind.TOOL, "tool"],
]);

/** The gates an operation must pass at admission, in evaluation order. */
export function gatesForOperation(spec: OperationSpec["kind"]): Gate[] {
  switch (spec.case) {
    case "toolGrantApply":
      return ["toolGrant"];
    case "modelProviderBind":
      return ["modelProviderUse"];
    case "containerRun":
      return spec.value.network ? ["containerExecution", "networkProfile"] : ["containerExecution"];
    case "diagnosticsExport":
      return ["artifactAccess"];
    case "executionStart":
      // An execution's calls are gated one by one at runtime; egress is decided here and
      // again for every connection through the egress proxy.
      return spec.value.network ? ["networkProfile"] : [];
    default:
      // Profiles, cancels and revocations concern no gate: taking a grant away is never
      // blocked by policy.
      return [];
  }
}

/** The gates a runtime call must pass. */
export function gatesForCall(call: RuntimeCall): Gate[] {
  switch (call.kind) {
    case CallKind.MODEL:
      return ["modelProviderUse"];
    case CallKind.CONNECTOR:
      return ["networkProfile"];
    case CallKind.TOOL:
      return ["toolGrant"];
    default:
      return [];
  }
}

/**
 * Inputs a rule must evaluate on without error to be accepted: one per gate, every field set,
 * so that a rule that misuses a field's type is refused when it is loaded, not when it decides.
 */
export const probeInputs: readonly PolicyInput[] = gates.map((gate) =>
  create(PolicyInputSchema, {
    gate,
    operationType: "agent_machine.tool_grant.apply",
    callKind: "model",
    profile: "profiles/probe",
    profileType: "personal",
    tool: "git",
    modelProvider: "ollama",
    modelProviderProfileType: "local_model_provider",
    modelProviderEndpoint: "https://models.example",
    connector: "github",
    network: true,
    image: "registry.example/probe@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    estimatedTokens: 1n,
    subject: "probe",
    delegation: "delegations/probe",
    labels: { probe: "probe" },
    destinationHost: "api.example",
    destinationPort: 443,
    mountHostPath: "/srv/probe",
    mountPath: "/probe",
    mountReadWrite: true,
    workspacePath: "out/probe.txt",
  }),
);
