// The governance of one `tools/call` through the MCP gateway, by the one runtime-call path
// (runtime-call.ts admitCall) that RuntimeService.AuthorizeCall takes for a tool call: the caller's scope, the profile rules (an
// applied, unrevoked grant of `server/tool` or `server/*` in its profile), the toolGrant gate
// (whose CEL input also holds the call's arguments and the tool's annotations), then one
// connector call charged to the operation's budget. Every call is audited, allowed or refused,
// with the SHA-256 of its arguments' canonical JSON and never the arguments.
import { createHash } from "node:crypto";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { denialOf, type AuditDecisionInit } from "../audit/decisions.js";
import { errorWithInfo } from "../api/errors.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { CallKind, RuntimeCallSchema } from "../gen/agentmachine/v1/runtime_pb.js";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import type { Principal } from "../governance/authority.js";
import { canonicalJsonText, type AuditDraft } from "../model/audit-chain.js";
import { grantName, type UpstreamTool } from "./mcp-tool-names.js";
import { admitCall, executionCallDraft, type RuntimeCallDeps } from "./runtime-call.js";

export const MCP_RPC = "mcp";

export interface ToolCallDeps extends RuntimeCallDeps {
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
          : info?.reason === "BUDGET_EXHAUSTED"
            ? `the ${metadata.dimension} budget`
            : undefined;
  // A refusal by no rule (a tool nobody offers, a task no longer running) just says why.
  return rule === undefined ? `refused: ${denial.rawMessage}` : `refused by ${rule}: ${denial.rawMessage}`;
}

export async function governToolCall(deps: ToolCallDeps, request: ToolCallRequest): Promise<ToolCallVerdict> {
  const { principal, operation, target } = request;
  const call = create(RuntimeCallSchema, { kind: CallKind.TOOL, tool: grantName(target) });
  const what = { rpc: MCP_RPC, commandRef: "McpToolCall", operation: operation.name, requestDigest: argumentsDigest(request.arguments) };
  const audit = (decision: AuditDecisionInit): AuditDraft | undefined =>
    deps.audit ? executionCallDraft(principal, what, decision, { mcpToolCall: { server: target.server, tool: target.tool } }) : undefined;
  const notOffered = request.exists
    ? undefined
    : errorWithInfo(Code.NotFound, "TOOL_NOT_OFFERED", `no upstream MCP server ${target.server} offers a tool ${target.tool}`, { ...target });
  try {
    const admission = await admitCall(deps, principal, operation, call, {
      audit,
      toolCall: { arguments: request.arguments, annotations: request.annotations },
      ...(notOffered !== undefined ? { uncarried: notOffered } : {}),
    });
    return admission.allowed ? { allowed: true } : { allowed: false, reason: refusalText(admission.denial) };
  } catch (error) {
    // The task ended between the caller's authentication and the charge.
    if (!(error instanceof ConnectError)) throw error;
    const draft = audit(denialOf(error));
    if (draft !== undefined) await deps.store.appendAudit(draft);
    return { allowed: false, reason: refusalText(error) };
  }
}
