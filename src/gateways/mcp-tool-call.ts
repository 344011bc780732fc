// The governance of one `tools/call` through the MCP gateway, by the same path as
// RuntimeService.AuthorizeCall for a tool call: the caller's scope, the profile rules (an
// applied, unrevoked grant of `server/tool` or `server/*` in its profile), the toolGrant gate
// (whose CEL input also holds the call's arguments and the tool's annotations), then one
// connector call charged to the operation's budget. Every call is audited, allowed or refused,
// with the SHA-256 of its arguments' canonical JSON and never the arguments.
import { createHash } from "node:crypto";
import { create, type JsonObject } from "@bufbuild/protobuf";
import type { ConnectError } from "@connectrpc/connect";
import { allowedDecision, denialOf, type AuditDecisionInit } from "../audit/decisions.js";
import { caller } from "../call/audit-scope.js";
import { BudgetSchema } from "../gen/agentmachine/v1/budget_pb.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { CallKind, RuntimeCallSchema } from "../gen/agentmachine/v1/runtime_pb.js";
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import { Code } from "../gen/google/rpc/code_pb.js";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import type { Principal } from "../governance/authority.js";
import { decideCall, type CallDecisionDeps } from "../governance/call-decision.js";
import { charge, costOf } from "../governance/runtime-charging.js";
import { chargeOperation } from "../lifecycle/operation-charging.js";
import type { OperationRunner } from "../lifecycle/operation-runner.js";
import { canonicalJsonText, type AuditDraft } from "../model/audit-chain.js";
import type { StoreAccounts, StoreAudit, StoreOperations } from "../store/store.js";
import { grantName, type UpstreamTool } from "./mcp-tool-names.js";

export const MCP_RPC = "mcp";

export interface ToolCallDeps extends CallDecisionDeps {
  store: StoreOperations & StoreAccounts & StoreAudit;
  runner: OperationRunner;
  /** Whether commands are audited (config.audit). */
  audit: boolean;
}

export interface ToolCallRequest {
  principal: Principal;
  operation: Operation;
  target: UpstreamTool;
  arguments: JsonObject;
  /** The tool's annotations as its upstream declares them. */
  annotations: JsonObject;
  /**
   * Whether the upstream offers the tool. A tool it does not offer is decided all the same (a
   * caller guessing names learns nothing of what exists beyond its grants) and, when allowed,
   * refused as not found without a charge.
   */
  exists: boolean;
}

/** Allowed (and charged), or refused with the text the caller gets, which names the rule. */
export type ToolCallVerdict = { allowed: true } | { allowed: false; reason: string };

/** SHA-256 (hex) of the arguments' RFC 8785 canonical JSON: what the audit log keeps of them. */
export function argumentsDigest(args: JsonObject): string {
  return createHash("sha256").update(canonicalJsonText(args)).digest("hex");
}

/** Which rule refused, in words a caller can act on: the ErrorInfo of the denial names it. */
export function refusalText(denial: ConnectError): string {
  const info = denial.findDetails(ErrorInfoSchema)[0];
  const metadata = info?.metadata ?? {};
  const rule =
    info?.reason === "POLICY_DENIED"
      ? `policy rule ${metadata.rule} (${metadata.gate} gate)`
      : info?.reason === "PROFILE_SEPARATION"
        ? `profile rule ${metadata.rule}`
        : info?.reason === "OUT_OF_SCOPE"
          ? `the delegation's scope (${metadata.axis})`
          : (info?.reason ?? "the plane");
  return `refused by ${rule}: ${denial.rawMessage}`;
}

export async function governToolCall(deps: ToolCallDeps, request: ToolCallRequest): Promise<ToolCallVerdict> {
  const { principal, operation, target } = request;
  const call = create(RuntimeCallSchema, { kind: CallKind.TOOL, tool: grantName(target) });
  const draft = (decision: AuditDecisionInit): AuditDraft => ({
    ...caller(principal),
    rpc: MCP_RPC,
    operationType: OperationType.EXECUTION_START,
    commandRef: "McpToolCall",
    resource: operation.name,
    decision,
    requestDigest: argumentsDigest(request.arguments),
    mcpToolCall: { server: target.server, tool: target.tool },
  });
  const refuse = async (decision: AuditDecisionInit, reason: string): Promise<ToolCallVerdict> => {
    if (deps.audit) await deps.store.appendAudit(draft(decision));
    return { allowed: false, reason };
  };
  const verdict = await decideCall(deps, principal, operation.profile, call, operation.labels, undefined, {
    arguments: request.arguments,
    annotations: request.annotations,
  });
  if (verdict.denial !== undefined) return refuse(denialOf(verdict.denial), refusalText(verdict.denial));
  if (!request.exists) {
    const reason = `no upstream MCP server ${target.server} offers a tool ${target.tool}`;
    return refuse({ allowed: false, denialCode: Code.NOT_FOUND, reason }, `refused: ${reason}`);
  }
  const limit = operation.requestedBudget ?? create(BudgetSchema);
  const audit = deps.audit ? draft(allowedDecision(verdict.decisions)) : undefined;
  const { outcome } = await chargeOperation(deps, operation.name, (current) => charge(limit, current.usage, costOf(call)), false, audit);
  if (outcome === undefined) {
    return refuse(
      { allowed: false, denialCode: Code.FAILED_PRECONDITION, reason: `${operation.name} is not running` },
      `refused: ${operation.name} is not running`,
    );
  }
  if (outcome.kind === "exhausted") {
    const reason = `the call would exhaust the ${outcome.dimension} budget; the task is ended`;
    return refuse({ allowed: false, denialCode: Code.RESOURCE_EXHAUSTED, reason }, `refused by the ${outcome.dimension} budget: ${reason}`);
  }
  return { allowed: true };
}
