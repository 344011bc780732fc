// Admission: turns a SubmitOperationRequest into the Operation to store, or refuses it.
// This is the one step where every operation type passes the same checks.
import { clone, create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { monotonicFactory } from "ulid";
import { BudgetSchema, type Budget } from "../gen/agentmachine/v1/budget_pb.js";
import { OperationSchema, type Operation, type OperationSpec } from "../gen/agentmachine/v1/operation_pb.js";
import { SubmitOperationRequestSchema, type SubmitOperationRequest } from "../gen/agentmachine/v1/operation_service_pb.js";
import { OperationType, TaskState } from "../gen/agentmachine/v1/types_pb.js";
import { operationTypeNames } from "../contract/mapping.js";
import { workingDirectory } from "../executors/local-process.js";
import { invalidField } from "../server/errors.js";
import type { Principal } from "../governance/authority.js";
import { requireOperation } from "../governance/scope.js";
import { workersDisabled } from "../workers/errors.js";
import type { NewOperation, OperationStore, StoredProfile } from "../store/store.js";
import { executionDefaults, reservationFor, spendsBudget } from "../governance/budget-ledger.js";
import { policyDenied } from "../governance/errors.js";
import { gatesForOperation } from "../governance/policy/gates.js";
import type { PolicyEngine } from "../governance/policy/policy-engine.js";
import { operationInput } from "../governance/policy/policy-input.js";
import { requireSeparation } from "../governance/profile-rules.js";
import { illegalTransition, noExecutor, profileAlreadyExists, profileNotFound, sandboxUnavailable, targetNotAllowed } from "./errors.js";
import { messageDigest } from "./message-digest.js";
import { operationTypeOfSpec } from "./spec-types.js";
import { isTerminal } from "./transitions.js";
import { visibleOperation } from "./visible-operation.js";
import { ATTR_OPERATION_NAME, ATTR_OPERATION_TYPE, inSpan } from "../telemetry/tracer.js";

const nextId = monotonicFactory();

/** What a server that cannot run a type lacks, as a refusal says it. */
const missingExecutor: ReadonlyMap<OperationType, string> = new Map([
  [OperationType.CONTAINER_RUN, "no container runtime is configured (amctl serve --container-runtime)"],
]);

/** Types that `agent_machine.execution.cancel` may target. */
const cancellable = new Set([OperationType.EXECUTION_START, OperationType.CONTAINER_RUN]);

/**
 * SHA-256 of the request without its request_id, over a canonical JSON form (keys sorted), so
 * that a retry with the same content matches whatever the order of map entries on the wire.
 */
export function requestDigest(request: SubmitOperationRequest): string {
  return messageDigest(SubmitOperationRequestSchema, { ...request, requestId: "" });
}

function withDefaults(requested: Budget | undefined, defaults: Budget): Budget {
  // clone, not create: create would return `defaults` itself, and this function changes it.
  const budget = clone(BudgetSchema, defaults);
  if (requested === undefined) return budget;
  for (const key of Object.keys(defaults) as (keyof Budget)[]) {
    const value = requested[key];
    if (typeof value === "bigint" && value > 0n) (budget as unknown as Record<string, bigint>)[key] = value;
  }
  return budget;
}

export interface AdmissionContext {
  store: OperationStore;
  defaultBudget: Budget;
  /** The caller; its delegation must cover the operation. */
  principal: Principal;
  policy: PolicyEngine;
  /** The operation types this server has an executor for; others are refused. */
  executable: ReadonlySet<OperationType>;
  /** Whether executions may name a worker_selector: only on a server that dispatches to remote workers. */
  workerSelectors: boolean;
  /** Set when executions cannot be sandboxed here: why (they are refused, SANDBOX_UNAVAILABLE). */
  sandboxUnavailable?: string;
}

/**
 * The operation a cancel or a revoke targets, checked for what that command needs of it — once
 * the caller may see it: a target out of its scope is NotFound, whatever state it is in.
 */
async function targetOf(spec: OperationSpec["kind"], store: OperationStore, principal: Principal): Promise<Operation | undefined> {
  if (spec.case === "executionCancel") {
    const target = await visibleOperation(store, principal, spec.value.target);
    if (!cancellable.has(target.type)) throw targetNotAllowed("spec.execution_cancel.target", `${target.name} is not an execution`);
    if (isTerminal(target.state)) throw illegalTransition(target.name, target.state, "cancel");
    return target;
  }
  if (spec.case === "toolGrantRevoke") {
    const grant = await visibleOperation(store, principal, spec.value.grant);
    const record = grant.artifact?.kind.case === "toolGrantRecord" ? grant.artifact.kind.value : undefined;
    if (grant.type !== OperationType.TOOL_GRANT_APPLY || grant.state !== TaskState.COMPLETED || record === undefined) {
      throw targetNotAllowed("spec.tool_grant_revoke.grant", `${grant.name} is not an applied tool grant`);
    }
    if (record.revokeCommandRef !== "") throw targetNotAllowed("spec.tool_grant_revoke.grant", `${grant.name} was already revoked`);
    return grant;
  }
  return undefined;
}

/** An admitted operation, to be stored under the idempotency scope its submitter chooses. */
export type Admitted = Omit<NewOperation, "idempotencyScope">;

/**
 * Admits a submit or refuses it, in this order: the delegation's scope, the profile, the
 * target of a command, the profile separation rules, the policy gates, an executor for the
 * type. Nothing is written here: the store takes the result, with its budget reservation, in
 * one commit (and PolicyService.EvaluatePolicy calls this as a dry run). In a span of its own,
 * `admission`, which names the operation it admits.
 */
export function admit(request: SubmitOperationRequest, context: AdmissionContext): Promise<Admitted> {
  const type = operationTypeOfSpec[request.spec!.kind.case!]; // a spec is required by the request's validation rules
  return inSpan("admission", { [ATTR_OPERATION_TYPE]: operationTypeNames.get(type) }, async (span) => {
    const admitted = await admitOrRefuse(request, type, context);
    span.setAttribute(ATTR_OPERATION_NAME, admitted.operation.name);
    return admitted;
  });
}

async function admitOrRefuse(request: SubmitOperationRequest, type: OperationType, { store, defaultBudget, principal, policy, executable, workerSelectors, sandboxUnavailable: noSandbox }: AdmissionContext): Promise<Admitted> {
  const spec = request.spec!.kind;
  const profile = spec.case === "profileCreate" ? `profiles/${spec.value.profileId}` : request.profile;
  requireOperation(principal, {
    type,
    profile,
    ...(spec.case === "toolGrantApply" ? { tool: spec.value.tool } : {}),
    ...(spec.case === "modelProviderBind" ? { provider: spec.value.provider } : {}),
  });
  const existing = await store.getProfile(profile);
  if (spec.case === "profileCreate" && existing !== undefined) throw profileAlreadyExists(profile);
  const stored: StoredProfile | undefined = spec.case === "profileCreate" ? { name: profile, profileType: spec.value.profileType } : existing;
  if (stored === undefined) throw profileNotFound(profile);
  // Checked against a stand-in root: whether a relative path escapes does not depend on where
  // the workspace will be.
  if (spec.case === "executionStart" && workingDirectory("/workspace", spec.value.workingDirectory) === undefined) {
    throw invalidField("spec.execution_start.working_directory", "must stay inside the operation's workspace");
  }
  const target = await targetOf(spec, store, principal);
  if (target?.artifact?.kind.case === "toolGrantRecord") requireOperation(principal, { type, profile, tool: target.artifact.kind.value.tool });
  requireSeparation({ profile, profileType: stored.profileType, spec, ...(target ? { target } : {}) });

  const where = { principal, profile, profileType: stored.profileType };
  const policyDecisions = policy.decide(stored.profileType, gatesForOperation(spec), operationInput(where, { type, spec: request.spec, labels: request.labels }));
  const denied = policyDecisions.find((decision) => !decision.allowed);
  if (denied !== undefined) throw policyDenied(denied);

  if (!executable.has(type)) throw noExecutor(operationTypeNames.get(type)!, missingExecutor.get(type) ?? "it has no executor for it");
  if (spec.case === "executionStart" && noSandbox !== undefined) throw sandboxUnavailable(noSandbox);
  if (spec.case === "executionStart" && !workerSelectors && Object.keys(spec.value.workerSelector).length > 0) throw workersDisabled();

  const now = new Date();
  // What an execution leaves at 0 gets the server's default, but never more than its delegation
  // and its profile can still give (src/governance/budget-ledger.ts).
  const defaults = spendsBudget(type) ? await executionDefaults(store, defaultBudget, principal, stored, now) : defaultBudget;
  const operation: Operation = create(OperationSchema, {
    name: `operations/${nextId()}`,
    requestId: request.requestId,
    type,
    profile,
    spec: request.spec,
    requestedBudget: withDefaults(request.requestedBudget, defaults),
    labels: request.labels,
    state: TaskState.QUEUED,
    delegation: principal.delegation.name,
    policyDecisions,
    createTime: timestampFromDate(now),
  });
  return {
    operation,
    requestDigest: requestDigest(request),
    ...(spec.case === "profileCreate"
      ? { createsProfile: { name: profile, profileType: spec.value.profileType, ...(spec.value.budget ? { budget: spec.value.budget } : {}) } }
      : {}),
    ...(spendsBudget(type) ? { reservation: reservationFor(operation, principal, stored, now) } : {}),
  };
}
