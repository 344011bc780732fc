// The server's description of itself as a WorkspaceOperationContract. Everything here is
// derived from the mapping tables, so adding an operation type or profile there updates it.
import { create } from "@bufbuild/protobuf";
import { WorkspaceOperationContractSchema, type WorkspaceOperationContract } from "../gen/agentmachine/v1/contract_pb.js";
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";
import { OperationType, ProfileType, TaskState } from "../gen/agentmachine/v1/types_pb.js";
import { auditableOperationTypes } from "../audit/audited-commands.js";
import { artifactTypeNames, commandRef, eventTypeNames, operationTypeNames, profileTypeNames } from "../model/mapping.js";

export const CONTRACT_ID = "urn:srcos:agent-machine:workspace-operation-contract:agent-machine-operation-plane";

const eventMeaning: Record<string, string> = {
  start: "The task was admitted under a delegation and began an attempt.",
  progress: "The task reported progress or crossed a budget warning threshold.",
  failure: "An attempt failed; the cause names the reason or the exhausted budget dimension.",
  retry: "Another attempt was scheduled after an exponential backoff.",
  cancel: "A cancel command stopped the task.",
  complete: "The task completed; its artifact is recorded on the operation.",
};

export interface ServerContractOptions {
  /** The default budget that bounds an execution when a delegation does not set a smaller one. */
  defaultBudget: Budget;
  /** When the server started: the time the contract's example events carry. */
  startedAt: Date;
}

/**
 * Builds the server's own contract. The workspaceOperation / operationTask pair describes the
 * server's canonical command (an execution start, queued until admitted), since the schema
 * requires one and the server itself is not an operation.
 */
export function buildServerContract(options: ServerContractOptions): WorkspaceOperationContract {
  const at = options.startedAt.toISOString();
  const allOperationTypes = [...operationTypeNames.keys()];
  return create(WorkspaceOperationContractSchema, {
    specVersion: "0.1.0",
    id: CONTRACT_ID,
    kind: "WorkspaceOperationContract",
    workspaceOperation: {
      operationId: "urn:srcos:workspace-operation:template",
      operationType: OperationType.EXECUTION_START,
      commandRef: commandRef(OperationType.EXECUTION_START),
    },
    operationTask: { taskId: "urn:srcos:operation-task:template", state: TaskState.QUEUED },
    supportedOperationTypes: allOperationTypes,
    profiles: {
      supported: [...profileTypeNames.keys()],
      inspectableSeparation: {
        personalVsCorporateFirewall: true,
        corporateVsMultiCorporateFirewall: true,
        enterpriseFirewallVsUserOwnedModel: true,
      },
    },
    artifacts: {
      requiredArtifacts: [...artifactTypeNames.keys()],
      agentMachineProfile: { kind: "AgentMachineProfile", profileType: ProfileType.PERSONAL },
      localAgentExecution: {
        kind: "LocalAgentExecution",
        delegationRef: "urn:srcos:delegation:caller",
        budget: options.defaultBudget,
      },
      toolGrantRecord: {
        kind: "ToolGrantRecord",
        applyCommandRef: commandRef(OperationType.TOOL_GRANT_APPLY),
        revokeCommandRef: commandRef(OperationType.TOOL_GRANT_REVOKE),
      },
      containerExecutionRecord: { kind: "ContainerExecutionRecord", operationType: OperationType.CONTAINER_RUN },
      modelProviderBinding: {
        kind: "ModelProviderBinding",
        operationType: OperationType.MODEL_PROVIDER_BIND,
        profileType: ProfileType.LOCAL_MODEL_PROVIDER,
        policyGateRef: "urn:srcos:policy-gate:model-provider-use",
      },
      agentMachineDiagnosticBundle: {
        kind: "AgentMachineDiagnosticBundle",
        operationType: OperationType.DIAGNOSTICS_EXPORT_REDACTED,
        credentialsIncluded: false,
        tokensIncluded: false,
        localSecretsIncluded: false,
        sensitivePromptsIncluded: false,
      },
    },
    controls: {
      delegatedAuthorityRequired: true,
      policyGates: {
        toolGrant: true,
        modelProviderUse: true,
        networkProfile: true,
        containerExecution: true,
        artifactAccess: true,
      },
      budget: options.defaultBudget,
      operationEvents: [...eventTypeNames].map(([eventType, name]) => ({
        eventType,
        at,
        details: eventMeaning[name],
      })),
      durableWorkspaceState: { mode: "operation-contract-only", externalWrites: false },
      ambientAuthority: false,
    },
    // What the audit interceptor and the services really audit (src/audit/audited-commands.ts).
    audit: {
      auditableCommands: auditableOperationTypes().map((operationType) => ({
        operationType,
        commandRef: commandRef(operationType),
        auditable: true,
      })),
    },
  });
}
