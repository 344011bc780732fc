// The one path every runtime call of an execution takes, whoever carries it: RuntimeService
// (an agent that asks with AuthorizeCall), the egress proxy (a connection), the model gateway (a
// model request) and the MCP gateway (a tool call). It finds the caller's running attempt (for a
// gateway, from the bearer token its request carries: attemptOfToken),
// decides the call (scope, profile rules, policy gates: governance/call-decision.ts) and
// charges what it costs in one store commit (lifecycle/operation-charging.ts), refusing a
// charge the budget cannot cover — which ends the task, naming the dimension.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { errorWithInfo } from "../api/errors.js";
import { caller } from "../call/audit-scope.js";
import { denialOf, allowedDecision, type AuditDecisionInit } from "../audit/decisions.js";
import { BudgetSchema, type Budget } from "../gen/agentmachine/v1/budget_pb.js";
import type { Operation, PolicyDecision } from "../gen/agentmachine/v1/operation_pb.js";
import type { RuntimeCall } from "../gen/agentmachine/v1/runtime_pb.js";
import { OperationType, TaskState } from "../gen/agentmachine/v1/types_pb.js";
import type { Authority, Principal } from "../governance/authority.js";
import { decideCall, type CallDecisionDeps } from "../governance/call-decision.js";
import { attemptSubject } from "../governance/execution-credentials.js";
import type { Destination, ToolCallFacts } from "../governance/policy/policy-input.js";
import { charge, costOf, reservableTokens, type Charge } from "../governance/runtime-charging.js";
import { operationNotFound } from "../lifecycle/errors.js";
import { chargeOperation } from "../lifecycle/operation-charging.js";
import type { OperationRunner } from "../lifecycle/operation-runner.js";
import type { AuditDraft } from "../model/audit-chain.js";
import type { BudgetDimensionName } from "../model/budget-dimensions.js";
import { addBudgets } from "../model/budget-math.js";
import type { StoreAccounts, StoreAudit, StoreOperations } from "../store/store.js";

export interface RuntimeCallDeps extends CallDecisionDeps {
  store: StoreOperations & StoreAccounts & StoreAudit;
  runner: OperationRunner;
}

export function notThisExecution(principal: Principal, operation: string) {
  return errorWithInfo(Code.PermissionDenied, "NOT_THIS_EXECUTION", `${principal.delegation.name} is not the execution credential of ${operation}`, {
    delegation: principal.delegation.name,
    operation,
  });
}

export function notRunning(operation: string) {
  return errorWithInfo(Code.FailedPrecondition, "NOT_RUNNING", `${operation} is not running`, { operation });
}

/** The refusal of a call that would exhaust `dimension`: the task is ended. */
export function callExhausts(dimension: BudgetDimensionName, operation: string) {
  return errorWithInfo(Code.ResourceExhausted, "BUDGET_EXHAUSTED", `the call would exhaust the ${dimension} budget; the task is ended`, {
    dimension,
    operation,
  });
}

/**
 * The running operation whose attempt `principal` is the execution credential of (by default
 * the operation the credential names). A credential of an earlier attempt (one a crashed server
 * left behind, say) is not this one.
 */
export async function runningAttempt(store: StoreOperations, principal: Principal, name = principal.delegation.operation): Promise<Operation> {
  if (name === "" || principal.delegation.operation !== name) throw notThisExecution(principal, name);
  const operation = await store.getOperation(name);
  if (operation === undefined) throw operationNotFound(name);
  if (operation.state !== TaskState.RUNNING) throw notRunning(name);
  if (principal.delegation.subject !== attemptSubject(operation)) throw notThisExecution(principal, name);
  return operation;
}

/** Whose running attempt a gateway request is; or why the gateway refuses it, for it to answer in its own wire shape. */
export type TokenAttempt =
  | { principal: Principal; operation: Operation; refusal?: undefined }
  | { refusal: "unauthenticated"; error: ConnectError; principal?: undefined }
  | { refusal: "not-an-attempt"; error: ConnectError; principal: Principal };

/**
 * The running attempt a gateway request's bearer `token` is the execution credential of:
 * authenticated as every RPC's credential is, then runningAttempt. Any other credential (a
 * root, a child delegation, an ended or earlier attempt's) is refused, because what a gateway
 * charges and audits belongs to one running execution.
 */
export async function attemptOfToken(authority: Pick<Authority, "authenticate">, store: StoreOperations, token: string): Promise<TokenAttempt> {
  let principal: Principal;
  try {
    principal = await authority.authenticate(token);
  } catch (error) {
    if (!(error instanceof ConnectError)) throw error;
    return { refusal: "unauthenticated", error };
  }
  try {
    return { principal, operation: await runningAttempt(store, principal) };
  } catch (error) {
    if (!(error instanceof ConnectError)) throw error;
    return { refusal: "not-an-attempt", error, principal };
  }
}

export type CallAdmission =
  | { allowed: true; operation: Operation; decisions: PolicyDecision[] /** Tokens reserved besides the cost (CallOptions.reserveTokens). */; reserved: bigint }
  | { allowed: false; operation: Operation; decisions: PolicyDecision[]; denial: ConnectError; exhausted?: BudgetDimensionName };

export interface CallOptions {
  /**
   * The audit record of the call for a decision. An allowed call's record commits with its
   * charge; a refused one is appended. Undefined (or a callback answering undefined): the caller
   * records it itself (or the server runs without audit).
   */
  audit?: (decision: AuditDecisionInit) => AuditDraft | undefined;
  /** For a connection through the egress proxy: where it goes. */
  destination?: Destination;
  /** For a tool call through the MCP gateway: its arguments and the tool's annotations, for the toolGrant gate. */
  toolCall?: ToolCallFacts;
  /**
   * Why the plane cannot carry the call even if it is allowed (the MCP gateway's tool that no
   * upstream offers): it is refused, charging nothing, after the decision, so a caller guessing
   * names learns nothing beyond what its grants allow.
   */
  uncarried?: ConnectError;
  /** What the call is charged up front; by default costOf(call). */
  cost?: Budget;
  /**
   * Tokens to reserve besides the cost, in the same commit, as much of them as stays below the
   * budget's warning line (reservableTokens): a stream then charges nothing more until it has
   * forwarded that many, and settles what it did not use (settleCall).
   */
  reserveTokens?: bigint;
}

/** Decides `call` of the running `operation` and, when allowed, charges it. */
export async function admitCall(
  deps: RuntimeCallDeps,
  principal: Principal,
  operation: Operation,
  call: RuntimeCall,
  options: CallOptions = {},
): Promise<CallAdmission> {
  const { store } = deps;
  const refuse = async (admission: Extract<CallAdmission, { allowed: false }>): Promise<CallAdmission> => {
    const draft = options.audit?.(denialOf(admission.denial));
    if (draft !== undefined) await store.appendAudit(draft);
    return admission;
  };
  const verdict = await decideCall(deps, principal, operation.profile, call, operation.labels, options.destination, options.toolCall);
  const denial = verdict.denial ?? options.uncarried;
  if (denial !== undefined) return refuse({ allowed: false, operation, decisions: verdict.decisions, denial });
  const limit = operation.requestedBudget ?? create(BudgetSchema);
  const cost = options.cost ?? costOf(call);
  let reserved = 0n;
  const charged = await chargeOperation(
    deps,
    operation.name,
    (current) => {
      reserved = reservableTokens(limit.tokens, current.usage?.tokens ?? 0n, cost.tokens, options.reserveTokens ?? 0n);
      return charge(limit, current.usage, addBudgets(cost, create(BudgetSchema, { tokens: reserved })));
    },
    false,
    options.audit?.(allowedDecision(verdict.decisions)),
  );
  if (charged.outcome === undefined) throw notRunning(operation.name);
  if (charged.outcome.kind === "exhausted") {
    const { dimension } = charged.outcome;
    return refuse({
      allowed: false,
      operation: charged.operation,
      decisions: verdict.decisions,
      denial: callExhausts(dimension, operation.name),
      exhausted: dimension,
    });
  }
  return { allowed: true, operation: charged.operation, decisions: verdict.decisions, reserved };
}

/**
 * Charges `more` and takes back `less` for a call already admitted (what it really used, once
 * known). `always`: the usage was really spent, so it is recorded even past the budget (which
 * then ends the task); otherwise a charge that would exhaust a dimension is refused, charging
 * nothing, and the task is ended all the same.
 */
export async function settleCall(
  deps: RuntimeCallDeps,
  operation: Operation,
  more: Budget,
  less: Budget | undefined,
  always: boolean,
  audit?: AuditDraft,
  onceKey?: string,
): Promise<{ operation: Operation; outcome: Charge }> {
  const limit = operation.requestedBudget ?? create(BudgetSchema);
  const charged = await chargeOperation(deps, operation.name, (current) => charge(limit, current.usage, more, less), always, audit, onceKey);
  if (charged.outcome === undefined) throw notRunning(operation.name);
  return { operation: charged.operation, outcome: charged.outcome };
}

/**
 * Charges `need` more tokens to a call already admitted, and up to `ahead` besides as a
 * reservation (reservableTokens: only below the budget's warning line), in one store commit;
 * the call settles what it reserved but did not use (settleCall). Answers the tokens charged, or
 * undefined when `need` itself would exhaust the budget: then nothing is charged and the task is
 * ended, as with settleCall.
 */
export async function chargeTokensAhead(deps: RuntimeCallDeps, operation: Operation, need: bigint, ahead: bigint): Promise<bigint | undefined> {
  const limit = operation.requestedBudget ?? create(BudgetSchema);
  let tokens = need;
  const charged = await chargeOperation(
    deps,
    operation.name,
    (current) => {
      tokens = need + reservableTokens(limit.tokens, current.usage?.tokens ?? 0n, need, ahead);
      return charge(limit, current.usage, create(BudgetSchema, { tokens }));
    },
    false,
    undefined,
  );
  if (charged.outcome === undefined) throw notRunning(operation.name);
  return charged.outcome.kind === "exhausted" ? undefined : tokens;
}

/**
 * The audit record of a runtime call the plane carried for an execution (a connection, a model
 * call, a tool call): who, which execution (`resource`), what was decided, the request's digest,
 * and the gateway's own fields (`egress`, `modelCall`, …) in `details`.
 */
export function executionCallDraft(
  principal: Principal | undefined,
  what: { rpc: string; commandRef: string; operation: string; requestDigest: string },
  decision: AuditDecisionInit,
  details: Partial<AuditDraft> = {},
): AuditDraft {
  return {
    ...caller(principal),
    rpc: what.rpc,
    operationType: OperationType.EXECUTION_START,
    commandRef: what.commandRef,
    resource: what.operation,
    decision,
    requestDigest: what.requestDigest,
    ...details,
  };
}
