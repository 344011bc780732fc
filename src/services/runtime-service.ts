// agentmachine.v1.RuntimeService: what a running execution asks before each call. Only the
// attempt's own execution credential may ask, and only for its own operation.
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { RuntimeService } from "../gen/agentmachine/v1/runtime_service_pb.js";
import { CallKind } from "../gen/agentmachine/v1/runtime_pb.js";
import { BudgetSchema } from "../gen/agentmachine/v1/budget_pb.js";
import { dimensionEnum, remainingAfter } from "../governance/runtime-charging.js";
import type { MacTokens } from "../lifecycle/mac-token.js";
import { invalidField } from "../api/errors.js";
import { principalOf } from "../call/principal.js";
import { auditDraft } from "../call/audit-scope.js";
import type { AuditDecisionInit } from "../audit/decisions.js";
import { allowedDecision } from "../audit/decisions.js";
import { admitCall, runningAttempt, settleCall, type RuntimeCallDeps } from "../gateways/runtime-call.js";

export interface RuntimeServiceDeps extends RuntimeCallDeps {
  /** Signs and reads call tickets (key kept in the store). */
  callTickets: MacTokens;
}

export function runtimeService(deps: RuntimeServiceDeps): ServiceImpl<typeof RuntimeService> {
  const { store } = deps;

  /** The record of a call: AuthorizeCall answers a refusal, not an error the audit interceptor would see. */
  const auditOf = (context: HandlerContext, name: string) => (decision: AuditDecisionInit) =>
    auditDraft(context, { ...(decision.allowed === true ? {} : { resource: name }), decision });

  return {
    async authorizeCall({ operation: name, call }, context) {
      const principal = principalOf(context);
      const operation = await runningAttempt(store, principal, name);
      const limit = operation.requestedBudget ?? create(BudgetSchema);
      const admission = await admitCall(deps, principal, operation, call!, { audit: auditOf(context, name) });
      if (!admission.allowed) {
        return {
          allowed: false,
          decisions: admission.decisions,
          denialReason: admission.denial.rawMessage,
          ...(admission.exhausted !== undefined ? { exhaustedDimension: dimensionEnum(admission.exhausted) } : {}),
          remaining: remainingAfter(limit, admission.operation.usage),
        };
      }
      const charged = admission.operation;
      const callTicket =
        call!.kind === CallKind.MODEL
          ? deps.callTickets.issue({ operation: name, call: String(charged.usage!.modelCalls), tokens: String(call!.estimatedTokens) })
          : "";
      return { allowed: true, decisions: admission.decisions, remaining: remainingAfter(limit, charged.usage), callTicket };
    },

    async reportUsage({ operation: name, callTicket, actualTokens }, context) {
      const principal = principalOf(context);
      const operation = await runningAttempt(store, principal, name);
      const ticket = deps.callTickets.read(callTicket);
      if (ticket === undefined || ticket.operation !== name || typeof ticket.tokens !== "string") {
        throw invalidField("call_ticket", "is not a ticket this server issued for this operation");
      }
      const estimated = BigInt(ticket.tokens);
      const limit = operation.requestedBudget ?? create(BudgetSchema);
      const more = create(BudgetSchema, { tokens: actualTokens > estimated ? actualTokens - estimated : 0n });
      const less = create(BudgetSchema, { tokens: estimated > actualTokens ? estimated - actualTokens : 0n });
      const audit = auditDraft(context, { decision: allowedDecision() });
      const { operation: charged, outcome } = await settleCall(deps, operation, more, less, true, audit, `call-ticket:${name}:${String(ticket.call)}`);
      return { remaining: remainingAfter(limit, charged.usage), withinBudget: outcome.kind === "within" };
    },
  };
}
