// The table of audited commands: what each RPC commands, and the contract generated from it.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { auditableOperationTypes, commandOf, procedureOf } from "../../src/audit/audited-commands.js";
import { buildServerContract } from "../../src/contract/server-contract.js";
import { operationTypeNames } from "../../src/model/mapping.js";
import { DelegationService } from "../../src/gen/agentmachine/v1/delegation_service_pb.js";
import { OperationService, SubmitOperationRequestSchema } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { OperationType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { defaultConfig } from "../../src/config/config.js";

describe("audited commands", () => {
  it.each([
    [
      "a submit, by its spec",
      OperationService.method.submitOperation,
      create(SubmitOperationRequestSchema, { spec: { kind: { case: "toolGrantRevoke", value: {} } } }),
      OperationType.TOOL_GRANT_REVOKE,
      "urn:srcos:workspace-operation-command:tool-grant-revoke",
    ],
    ["a submit not read yet", OperationService.method.submitOperation, undefined, OperationType.UNSPECIFIED, "SubmitOperation"],
    [
      "a cancel, as the operation it submits",
      OperationService.method.cancelOperation,
      undefined,
      OperationType.EXECUTION_CANCEL,
      "urn:srcos:workspace-operation-command:execution-cancel",
    ],
    ["a command that is not an operation", DelegationService.method.issueDelegation, undefined, OperationType.UNSPECIFIED, "IssueDelegation"],
    ["a read", OperationService.method.getOperation, undefined, OperationType.UNSPECIFIED, "GetOperation"],
  ] as const)("resolves %s", (_what, method, request, operationType, commandRef) => {
    expect(commandOf(method, request)).toEqual({ operationType, commandRef });
  });

  it("names an RPC by its procedure path", () => {
    expect(procedureOf(OperationService.method.submitOperation)).toBe("/agentmachine.v1.OperationService/SubmitOperation");
  });

  it("generates the contract's auditable commands: every operation type, tool grants apply and revoke among them", () => {
    expect(auditableOperationTypes()).toEqual([...operationTypeNames.keys()].sort((a, b) => a - b));
    const contract = buildServerContract({ defaultBudget: defaultConfig.defaultBudget, startedAt: new Date(0) });
    expect(
      contract.audit!.auditableCommands.filter(
        (c) => c.operationType === OperationType.TOOL_GRANT_APPLY || c.operationType === OperationType.TOOL_GRANT_REVOKE,
      ),
    ).toEqual([
      expect.objectContaining({ commandRef: "urn:srcos:workspace-operation-command:tool-grant-apply", auditable: true }),
      expect.objectContaining({ commandRef: "urn:srcos:workspace-operation-command:tool-grant-revoke", auditable: true }),
    ]);
  });
});
