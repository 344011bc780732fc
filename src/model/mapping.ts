// The one place where the contract's spellings meet the proto API: the contract's string
// values (`agent_machine.execution.start`, `corporate_firewall`, `queued`, …) and the proto
// enums, and the upstream JSON document shape and the WorkspaceOperationContract message.
//
// The message mirrors the upstream document field for field and its proto JSON names are the
// document's camelCase keys, so the conversion walks the message descriptor and only has to
// translate enums (contract strings) and 64-bit integers (JSON numbers).
import { create, ScalarType, type DescEnum, type DescField, type DescMessage, type Message } from "@bufbuild/protobuf";
import { ArtifactType, EventType, OperationType, ProfileType, TaskState } from "../gen/agentmachine/v1/types_pb.js";
import { WorkspaceOperationContractSchema, type WorkspaceOperationContract } from "../gen/agentmachine/v1/contract_pb.js";

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/** Contract string for each proto enum value, by enum. Enum values not listed have no contract spelling. */
export const operationTypeNames: ReadonlyMap<OperationType, string> = new Map([
  [OperationType.PROFILE_CREATE, "agent_machine.profile.create"],
  [OperationType.EXECUTION_START, "agent_machine.execution.start"],
  [OperationType.EXECUTION_CANCEL, "agent_machine.execution.cancel"],
  [OperationType.TOOL_GRANT_APPLY, "agent_machine.tool_grant.apply"],
  [OperationType.TOOL_GRANT_REVOKE, "agent_machine.tool_grant.revoke"],
  [OperationType.CONTAINER_RUN, "agent_machine.container.run"],
  [OperationType.MODEL_PROVIDER_BIND, "agent_machine.model_provider.bind"],
  [OperationType.DIAGNOSTICS_EXPORT_REDACTED, "agent_machine.diagnostics.export_redacted"],
]);

/** Contract command reference of an operation type, e.g. `urn:srcos:workspace-operation-command:execution-start`. */
export function commandRef(type: OperationType): string {
  const name = operationTypeNames.get(type);
  if (name === undefined) throw new Error(`operation type ${type} has no contract name`);
  return `urn:srcos:workspace-operation-command:${name.replace(/^agent_machine\./, "").replaceAll(/[._]/g, "-")}`;
}

export const profileTypeNames: ReadonlyMap<ProfileType, string> = new Map([
  [ProfileType.PERSONAL, "personal"],
  [ProfileType.CORPORATE_FIREWALL, "corporate_firewall"],
  [ProfileType.MULTI_CORPORATE_FIREWALL, "multi_corporate_firewall"],
  [ProfileType.LOCAL_MODEL_PROVIDER, "local_model_provider"],
  [ProfileType.HOSTED_MODEL_PROVIDER, "hosted_model_provider"],
  [ProfileType.AIRGAPPED_LOCAL_ONLY, "airgapped_local_only"],
  [ProfileType.USER_OWNED_MODEL, "user_owned_model"],
]);

export const artifactTypeNames: ReadonlyMap<ArtifactType, string> = new Map([
  [ArtifactType.AGENT_MACHINE_PROFILE, "AgentMachineProfile"],
  [ArtifactType.LOCAL_AGENT_EXECUTION, "LocalAgentExecution"],
  [ArtifactType.TOOL_GRANT_RECORD, "ToolGrantRecord"],
  [ArtifactType.CONTAINER_EXECUTION_RECORD, "ContainerExecutionRecord"],
  [ArtifactType.MODEL_PROVIDER_BINDING, "ModelProviderBinding"],
  [ArtifactType.AGENT_MACHINE_DIAGNOSTIC_BUNDLE, "AgentMachineDiagnosticBundle"],
]);

export const taskStateNames: ReadonlyMap<TaskState, string> = new Map([
  [TaskState.QUEUED, "queued"],
  [TaskState.RUNNING, "running"],
  [TaskState.RETRYING, "retrying"],
  [TaskState.CANCELLED, "cancelled"],
  [TaskState.FAILED, "failed"],
  [TaskState.COMPLETED, "completed"],
]);

export const eventTypeNames: ReadonlyMap<EventType, string> = new Map([
  [EventType.START, "start"],
  [EventType.PROGRESS, "progress"],
  [EventType.FAILURE, "failure"],
  [EventType.RETRY, "retry"],
  [EventType.CANCEL, "cancel"],
  [EventType.COMPLETE, "complete"],
]);

const tablesByEnum = new Map<string, ReadonlyMap<number, string>>([
  ["agentmachine.v1.OperationType", operationTypeNames],
  ["agentmachine.v1.ProfileType", profileTypeNames],
  ["agentmachine.v1.ArtifactType", artifactTypeNames],
  ["agentmachine.v1.TaskState", taskStateNames],
  ["agentmachine.v1.EventType", eventTypeNames],
]);

function enumTable(desc: DescEnum): ReadonlyMap<number, string> {
  const table = tablesByEnum.get(desc.typeName);
  if (table === undefined) throw new Error(`no contract spelling for enum ${desc.typeName}`);
  return table;
}

// A value with no contract spelling (UNSPECIFIED, or a number from a newer client) renders as
// the proto enum value name, or the number, so that schema validation names it.
function enumToJson(desc: DescEnum, value: number): string {
  return enumTable(desc).get(value) ?? desc.value[value]?.name ?? String(value);
}

function enumFromJson(desc: DescEnum, text: string): number {
  for (const [value, name] of enumTable(desc)) if (name === text) return value;
  throw new Error(`"${text}" is not a ${desc.name} of the contract`);
}

function scalarToJson(value: unknown): Json {
  if (typeof value === "bigint") {
    // Budgets are uint64 in proto and JSON numbers in the contract. Values above 2^53 have no
    // exact JSON number in JavaScript, so we refuse rather than round.
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`integer ${value} exceeds 2^53-1`);
    return Number(value);
  }
  return value as Json;
}

function singleToJson(field: DescField, value: unknown): Json {
  if (field.fieldKind === "enum" || (field.fieldKind === "list" && field.listKind === "enum")) {
    return enumToJson(field.enum as DescEnum, value as number);
  }
  if (field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message")) {
    return messageToJson(field.message as DescMessage, value as Message);
  }
  return scalarToJson(value);
}

function messageToJson(desc: DescMessage, message: Message): JsonObject {
  const out: JsonObject = {};
  const record = message as unknown as Record<string, unknown>;
  for (const field of desc.fields) {
    const value = record[field.localName];
    if (field.fieldKind === "map") throw new Error(`map field ${field.name} has no contract shape`);
    if (field.fieldKind === "list") {
      out[field.jsonName] = (value as unknown[]).map((item) => singleToJson(field, item));
      continue;
    }
    // Unset sub-messages and unset optional scalars are absent from the document, so that a
    // missing part of a contract is reported as a missing required property.
    if (value === undefined) continue;
    out[field.jsonName] = singleToJson(field, value);
  }
  return out;
}

const int64Scalars = new Set<ScalarType>([ScalarType.INT64, ScalarType.UINT64, ScalarType.SINT64, ScalarType.FIXED64, ScalarType.SFIXED64]);

function singleFromJson(field: DescField, value: Json, path: string): unknown {
  if (field.fieldKind === "enum" || (field.fieldKind === "list" && field.listKind === "enum")) {
    return enumFromJson(field.enum as DescEnum, value as string);
  }
  if (field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message")) {
    return messageFromJson(field.message as DescMessage, value as JsonObject, path);
  }
  if (typeof value === "number" && field.scalar !== undefined && int64Scalars.has(field.scalar)) {
    if (!Number.isSafeInteger(value)) throw new Error(`${path}: integer ${value} exceeds 2^53-1`);
    return BigInt(value);
  }
  return value;
}

function messageFromJson(desc: DescMessage, json: JsonObject, path: string): Message {
  const init: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(json)) {
    const field = desc.fields.find((f) => f.jsonName === key);
    if (field === undefined) throw new Error(`${path}/${key}: not a field of ${desc.typeName}`);
    init[field.localName] =
      field.fieldKind === "list"
        ? (value as Json[]).map((item, index) => singleFromJson(field, item, `${path}/${key}/${index}`))
        : singleFromJson(field, value, `${path}/${key}`);
  }
  return create(desc, init as never);
}

/** Renders a contract message as the upstream JSON document. */
export function contractToJson(contract: WorkspaceOperationContract): JsonObject {
  return messageToJson(WorkspaceOperationContractSchema, contract);
}

/**
 * Reads an upstream JSON document into the message. Only for documents that already passed
 * schema validation: anything the message cannot hold throws.
 */
export function contractFromJson(document: JsonObject): WorkspaceOperationContract {
  return messageFromJson(WorkspaceOperationContractSchema, document, "") as WorkspaceOperationContract;
}
