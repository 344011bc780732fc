// Which operation type each case of OperationSpec's oneof submits: the one table that admission
// (the type of a submit) and the audit (what a submit commands) both read.
import type { OperationSpec } from "../gen/agentmachine/v1/operation_pb.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";

export type SpecCase = NonNullable<OperationSpec["kind"]["case"]>;

export const operationTypeOfSpec: Readonly<Record<SpecCase, OperationType>> = {
  profileCreate: OperationType.PROFILE_CREATE,
  executionStart: OperationType.EXECUTION_START,
  executionCancel: OperationType.EXECUTION_CANCEL,
  toolGrantApply: OperationType.TOOL_GRANT_APPLY,
  toolGrantRevoke: OperationType.TOOL_GRANT_REVOKE,
  containerRun: OperationType.CONTAINER_RUN,
  modelProviderBind: OperationType.MODEL_PROVIDER_BIND,
  diagnosticsExport: OperationType.DIAGNOSTICS_EXPORT_REDACTED,
};
