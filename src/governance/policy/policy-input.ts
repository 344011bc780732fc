// Builds the `input` a policy rule sees (agentmachine.v1.PolicyInput) for an operation being
// admitted or a runtime call, in the contract's spellings.
import { create, type JsonObject } from "@bufbuild/protobuf";
import type { Mount, Operation } from "../../gen/agentmachine/v1/operation_pb.js";
import { PolicyInputSchema, type PolicyInput } from "../../gen/agentmachine/v1/policy_pb.js";
import type { RuntimeCall } from "../../gen/agentmachine/v1/runtime_pb.js";
import type { ProfileType } from "../../gen/agentmachine/v1/types_pb.js";
import { operationTypeNames, profileTypeNames } from "../../model/mapping.js";
import type { Principal } from "../authority.js";
import { callKindNames } from "../../model/policy-gates.js";

interface Where {
  principal: Principal;
  profile: string;
  profileType: ProfileType;
}

function base({ principal, profile, profileType }: Where) {
  return {
    profile,
    profileType: profileTypeNames.get(profileType) ?? "",
    subject: principal.delegation.subject,
    delegation: principal.delegation.name,
  };
}

export function operationInput(where: Where, operation: Pick<Operation, "type" | "spec" | "labels">): PolicyInput {
  const spec = operation.spec?.kind;
  return create(PolicyInputSchema, {
    ...base(where),
    operationType: operationTypeNames.get(operation.type) ?? "",
    labels: operation.labels,
    ...(spec?.case === "toolGrantApply" ? { tool: spec.value.tool } : {}),
    ...(spec?.case === "modelProviderBind" ? { modelProvider: spec.value.provider, modelProviderEndpoint: spec.value.endpoint } : {}),
    ...(spec?.case === "containerRun" ? { image: spec.value.image, network: spec.value.network } : {}),
    ...(spec?.case === "executionStart" ? { network: spec.value.network } : {}),
  });
}

/** The input the artifactAccess gate decides one mount of an operation with (its host path resolved at admission). */
export function mountInput(where: Where, operation: Pick<Operation, "type" | "spec" | "labels">, mount: Mount): PolicyInput {
  return create(PolicyInputSchema, {
    ...operationInput(where, operation),
    mountHostPath: mount.hostPath,
    mountPath: mount.path,
    mountReadWrite: mount.readWrite,
  });
}

/** Where a connection through the egress proxy goes. */
export interface Destination {
  host: string;
  port: number;
}

/** For a tool call through the MCP gateway: what the caller sends and what the upstream declares. */
export interface ToolCallFacts {
  arguments: JsonObject;
  annotations: JsonObject;
}

/** A JSON object's members as CEL rules see them: a string as it is, any other value as its JSON. */
function flatStrings(object: JsonObject): Record<string, string> {
  return Object.fromEntries(Object.entries(object).map(([name, value]) => [name, typeof value === "string" ? value : JSON.stringify(value)]));
}

export function callInput(
  where: Where,
  call: RuntimeCall,
  providerProfileType: ProfileType | undefined,
  labels: Readonly<Record<string, string>>,
  destination?: Destination,
  toolCall?: ToolCallFacts,
): PolicyInput {
  return create(PolicyInputSchema, {
    ...base(where),
    callKind: callKindNames.get(call.kind) ?? "",
    tool: call.tool,
    modelProvider: call.modelProvider,
    model: call.model,
    modelProviderProfileType: providerProfileType === undefined ? "" : (profileTypeNames.get(providerProfileType) ?? ""),
    connector: call.connector,
    network: call.connector !== "",
    estimatedTokens: call.estimatedTokens,
    labels: { ...labels },
    ...(destination !== undefined ? { destinationHost: destination.host, destinationPort: destination.port } : {}),
    ...(toolCall !== undefined ? { toolArguments: flatStrings(toolCall.arguments), toolAnnotations: flatStrings(toolCall.annotations) } : {}),
  });
}
