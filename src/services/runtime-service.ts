// agentmachine.v1.RuntimeService: what a running execution asks before each call. Only the
// attempt's own execution credential may ask, and only for its own operation.
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { Code as RpcCode } from "../gen/google/rpc/code_pb.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import type { RuntimeService } from "../gen/agentmachine/v1/runtime_service_pb.js";
import { CallKind } from "../gen/agentmachine/v1/runtime_pb.js";
import { TaskState } from "../gen/agentmachine/v1/types_pb.js";
import type { Principal } from "../governance/authority.js";
import { attemptSubject } from "../governance/execution-credentials.js";
import { decideCall, type CallDecisionDeps } from "../governance/call-decision.js";
import { BudgetSchema } from "../gen/agentmachine/v1/budget_pb.js";
import { charge, costOf, dimensionEnum, remainingAfter, type Charge } from "../governance/runtime-charging.js";
import type { OperationRunner } from "../lifecycle/operation-runner.js";
import { operationNotFound } from "../lifecycle/errors.js";
import type { MacTokens } from "../lifecycle/mac-token.js";
import { errorWithInfo, invalidField } from "../api/errors.js";
import { principalOf } from "../call/principal.js";
import { auditDraft } from "../call/audit-scope.js";
import type { AuditDraft } from "../model/audit-chain.js";
import { chargeOperation } from "../lifecycle/operation-charging.js";
import type { StoreAccounts, StoreAudit, StoreOperations } from "../store/store.js";
import { allowedDecision, denialOf, type AuditDecisionInit } from "../audit/decisions.js";

export interface RuntimeServiceDeps extends CallDecisionDeps {
  store: StoreOperations & StoreAccounts & StoreAudit;
  runner: OperationRunner;
  /** Signs and reads call tickets (key kept in the store). */
  callTickets: MacTokens;
}

function notThisExecution(principal: Principal, operation: string) {
  return errorWithInfo(Code.PermissionDenied, "NOT_THIS_EXECUTION", `${principal.delegation.name} is not the execution credential of ${operation}`, {
    delegation: principal.delegation.name,
    operation,
  });
}

function notRunning(operation: Operation) {
  return errorWithInfo(Code.FailedPrecondition, "NOT_RUNNING", `${operation.name} is not running`, { operation: operation.name });
}

export function runtimeService(deps: RuntimeServiceDeps): ServiceImpl<typeof RuntimeService> {
  const { store, runner } = deps;

  /** The running operation the caller's execution credential is bound to. */
  async function ownOperation(principal: Principal, name: string): Promise<Operation> {
    if (principal.delegation.operation !== name) throw notThisExecution(principal, name);
    const operation = await store.getOperation(name);
    if (operation === undefined) throw operationNotFound(name);
    if (operation.state !== TaskState.RUNNING) throw notRunning(operation);
    // A credential of an earlier attempt (say, one a crashed server left behind) is not this one.
    if (principal.delegation.subject !== attemptSubject(operation)) throw notThisExecution(principal, name);
    return operation;
  }

  /** Charges a running operation (src/lifecycle/operation-charging.ts). */
  async function applyCharge(name: string, compute: (operation: Operation) => Charge, always: boolean, audit: AuditDraft | undefined, onceKey?: string) {
    const { operation, outcome } = await chargeOperation({ store, runner }, name, compute, always, audit, onceKey);
    if (outcome === undefined) throw notRunning(operation);
    return { operation, outcome };
  }

  /** Records a refused call: AuthorizeCall answers a refusal, not an error the audit interceptor would see. */
  async function auditRefusal(context: HandlerContext, name: string, decision: AuditDecisionInit): Promise<void> {
    const draft = auditDraft(context, { resource: name, decision });
    if (draft !== undefined) await store.appendAudit(draft);
  }

  return {
    async authorizeCall({ operation: name, call }, context) {
      const principal = principalOf(context);
      const operation = await ownOperation(principal, name);
      const verdict = await decideCall(deps, principal, operation.profile, call!, operation.labels);
      const limit = operation.requestedBudget ?? create(BudgetSchema);
      if (verdict.denial !== undefined) {
        await auditRefusal(context, name, denialOf(verdict.denial));
        return { allowed: false, decisions: verdict.decisions, denialReason: verdict.denial.rawMessage, remaining: remainingAfter(limit, operation.usage) };
      }
      const audit = auditDraft(context, { decision: allowedDecision(verdict.decisions) });
      const { operation: charged, outcome } = await applyCharge(name, (current) => charge(limit, current.usage, costOf(call!)), false, audit);
      if (outcome.kind === "exhausted") {
        const denialReason = `the call would exhaust the ${outcome.dimension} budget; the task is ended`;
        await auditRefusal(context, name, { allowed: false, denialCode: RpcCode.RESOURCE_EXHAUSTED, reason: denialReason });
        return {
          allowed: false,
          decisions: verdict.decisions,
          denialReason,
          exhaustedDimension: dimensionEnum(outcome.dimension),
          remaining: remainingAfter(limit, charged.usage),
        };
      }
      const callTicket =
        call!.kind === CallKind.MODEL
          ? deps.callTickets.issue({ operation: name, call: String(charged.usage!.modelCalls), tokens: String(call!.estimatedTokens) })
          : "";
      return { allowed: true, decisions: verdict.decisions, remaining: remainingAfter(limit, charged.usage), callTicket };
    },

    async reportUsage({ operation: name, callTicket, actualTokens }, context) {
      const principal = principalOf(context);
      const operation = await ownOperation(principal, name);
      const ticket = deps.callTickets.read(callTicket);
      if (ticket === undefined || ticket.operation !== name || typeof ticket.tokens !== "string") {
        throw invalidField("call_ticket", "is not a ticket this server issued for this operation");
      }
      const estimated = BigInt(ticket.tokens);
      const limit = operation.requestedBudget ?? create(BudgetSchema);
      const more = create(BudgetSchema, { tokens: actualTokens > estimated ? actualTokens - estimated : 0n });
      const less = create(BudgetSchema, { tokens: estimated > actualTokens ? estimated - actualTokens : 0n });
      const audit = auditDraft(context, { decision: allowedDecision() });
      const { operation: charged, outcome } = await applyCharge(
        name,
        (current) => charge(limit, current.usage, more, less),
        true,
        audit,
        `call-ticket:${name}:${String(ticket.call)}`,
      );
      return { remaining: remainingAfter(limit, charged.usage), withinBudget: outcome.kind === "within" };
    },
  };
}
