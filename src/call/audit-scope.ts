// A call's audit scope — the RPC, what it commands (src/audit/audited-commands.ts) and the digest
// of its request with secrets blanked — which the audit interceptor (src/server/audit-interceptor.ts)
// puts into the call's context values, and from which a service makes the record of a command it
// carries out (auditDraft), so the record commits with the effect.
import { createContextKey, type ContextValues, type HandlerContext } from "@connectrpc/connect";
import type { Command } from "../audit/audited-commands.js";
import type { AuditDecisionInit } from "../audit/decisions.js";
import type { Principal } from "../governance/authority.js";
import type { AuditDraft } from "../model/audit-chain.js";
import { principalOf } from "./principal.js";

export interface AuditScope {
  rpc: string;
  command: Command;
  /**
   * The request's digest, computed when a record needs it (most calls make none); empty until
   * the request is read (a client or bidi stream's first message).
   */
  requestDigest: () => string;
}

const auditScopeKey = createContextKey<AuditScope | undefined>(undefined, { description: "audit scope" });

/** For the audit interceptor, before the call. */
export function setAuditScope(values: ContextValues, scope: AuditScope): void {
  values.set(auditScopeKey, scope);
}

const ANONYMOUS = "anonymous";

/** Who: the delegation's subject, the delegation, and its chain root first. */
export function caller(principal: Principal | undefined): Pick<AuditDraft, "principal" | "delegation" | "delegationChain"> {
  if (principal === undefined) return { principal: ANONYMOUS, delegation: "", delegationChain: [] };
  const { delegation, chain } = principal;
  return { principal: delegation.subject, delegation: delegation.name, delegationChain: [...chain.map((d) => d.name).reverse(), delegation.name] };
}

export function draftOf(scope: AuditScope, principal: Principal | undefined, resource: string, decision: AuditDecisionInit): AuditDraft {
  return {
    ...caller(principal),
    rpc: scope.rpc,
    operationType: scope.command.operationType,
    commandRef: scope.command.commandRef,
    resource,
    decision,
    requestDigest: scope.requestDigest(),
  };
}

/**
 * The audit record of this call's command, for the store write that carries it out (an empty
 * resource is filled in by the store with what the write acted on); undefined when the server
 * runs without audit (`config.audit` false).
 */
export function auditDraft(context: HandlerContext, what: { resource?: string; decision: AuditDecisionInit }): AuditDraft | undefined {
  const scope = context.values.get(auditScopeKey);
  return scope && draftOf(scope, principalOf(context), what.resource ?? "", what.decision);
}
