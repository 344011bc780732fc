// The one table of audited commands: the RPCs that change state, and what a request of each
// commands (an operation type and its contract command ref, or the RPC's own name for commands
// that are not operations). From it the audit interceptor resolves every call — a denial of any
// RPC is recorded with what was attempted — the services' records take their operation type and
// command ref, and the contract's audit.auditableCommands is generated
// (src/contract/server-contract.ts), so the contract says what the server really audits.
import type { DescMethod } from "@bufbuild/protobuf";
import { AuditService } from "../gen/agentmachine/v1/audit_service_pb.js";
import { DelegationService } from "../gen/agentmachine/v1/delegation_service_pb.js";
import { McpUpstreamService } from "../gen/agentmachine/v1/mcp_upstream_service_pb.js";
import { OperationService, type SubmitOperationRequest } from "../gen/agentmachine/v1/operation_service_pb.js";
import { PolicyService } from "../gen/agentmachine/v1/policy_service_pb.js";
import { RuntimeService } from "../gen/agentmachine/v1/runtime_service_pb.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import { commandRef } from "../model/mapping.js";
import { operationTypeOfSpec } from "../model/spec-types.js";

export interface Command {
  /** UNSPECIFIED for a command that is not an operation. */
  operationType: OperationType;
  commandRef: string;
}

interface AuditedRpc {
  /** The operation types the RPC creates; none for a command that is not an operation. */
  operationTypes: readonly OperationType[];
  /** What one request of the RPC commands. */
  command(request: unknown): Command;
}

/** `/agentmachine.v1.OperationService/SubmitOperation`: the procedure path, as the audit record's `rpc` spells it. */
export function procedureOf(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

const operationCommand = (operationType: OperationType): Command => ({ operationType, commandRef: commandRef(operationType) });

/** A command that is not an operation (or a call that is not a command at all) goes by its method's name, e.g. `IssueDelegation`. */
const methodCommand = (method: DescMethod): Command => ({ operationType: OperationType.UNSPECIFIED, commandRef: method.name });

const plainCommand = (method: DescMethod): [string, AuditedRpc] => [procedureOf(method), { operationTypes: [], command: () => methodCommand(method) }];

const auditedRpcs: ReadonlyMap<string, AuditedRpc> = new Map([
  [
    procedureOf(OperationService.method.submitOperation),
    {
      operationTypes: Object.values(operationTypeOfSpec),
      command(request) {
        const spec = (request as SubmitOperationRequest | undefined)?.spec?.kind;
        return spec?.case === undefined ? methodCommand(OperationService.method.submitOperation) : operationCommand(operationTypeOfSpec[spec.case]);
      },
    },
  ],
  // CancelOperation submits the agent_machine.execution.cancel operation.
  [
    procedureOf(OperationService.method.cancelOperation),
    { operationTypes: [OperationType.EXECUTION_CANCEL], command: () => operationCommand(OperationType.EXECUTION_CANCEL) },
  ],
  plainCommand(DelegationService.method.issueDelegation),
  plainCommand(DelegationService.method.revokeDelegation),
  plainCommand(PolicyService.method.applyPolicyBundle),
  // What the MCP gateway forwards to, and (stdio) what the server runs.
  plainCommand(McpUpstreamService.method.putMcpUpstream),
  plainCommand(McpUpstreamService.method.deleteMcpUpstream),
  // When it charges the budget (an allowed call); a refused one is a denial.
  plainCommand(RuntimeService.method.authorizeCall),
  plainCommand(RuntimeService.method.reportUsage),
  // The audit log's retention: deleting records is itself recorded, in the same commit.
  plainCommand(AuditService.method.pruneAuditLog),
]);

/** What a call of `method` with `request` (undefined while it is not read yet) commands. */
export function commandOf(method: DescMethod, request: unknown): Command {
  return auditedRpcs.get(procedureOf(method))?.command(request) ?? methodCommand(method);
}

/** Every operation type an audited RPC creates, in enum order: the contract's auditable commands. */
export function auditableOperationTypes(): OperationType[] {
  const types = new Set([...auditedRpcs.values()].flatMap((rpc) => rpc.operationTypes));
  return [...types].sort((a, b) => a - b);
}
