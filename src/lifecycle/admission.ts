// Admission: turns a SubmitOperationRequest into the Operation to store, or refuses it.
// This is the one step where every operation type passes the same checks.
import { clone, create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { monotonicFactory } from "ulid";
import { BudgetSchema, type Budget } from "../gen/agentmachine/v1/budget_pb.js";
import { OperationSchema, OperationSpecSchema, type Mount, type Operation, type OperationSpec } from "../gen/agentmachine/v1/operation_pb.js";
import { SubmitOperationRequestSchema, type SubmitOperationRequest } from "../gen/agentmachine/v1/operation_service_pb.js";
import { OperationType, TaskState } from "../gen/agentmachine/v1/types_pb.js";
import { operationTypeNames } from "../model/mapping.js";
import { operationName } from "../model/resource-names.js";
import { workingDirectory } from "../executors/local-process.js";
import { invalidField } from "../api/errors.js";
import type { Principal } from "../governance/authority.js";
import { requireOperation } from "../governance/scope.js";
import { workersDisabled } from "../workers/errors.js";
import type { NewOperation, StoreAccounts, StoredProfile, StoreOperations } from "../store/store.js";
import { executionDefaults, reservationFor } from "../governance/budget-ledger.js";
import { policyDenied, profileAlreadyExists, profileNotFound } from "../governance/errors.js";
import { gatesForOperation } from "../model/policy-gates.js";
import type { PolicyEngine } from "../governance/policy/policy-engine.js";
import { mountInput, operationInput } from "../governance/policy/policy-input.js";
import { requireSeparation } from "../governance/profile-rules.js";
import { noExecutor, sandboxUnavailable, targetNotAllowed } from "./errors.js";
import { messageDigest } from "./message-digest.js";
import { admitMounts } from "./mount-admission.js";
import { operationTypeOfSpec } from "../model/spec-types.js";
import { requireNotEnded } from "./cancel-target.js";
import { isExecution } from "../model/execution-types.js";
import { visibleOperation } from "./visible-operation.js";
import { ATTR_OPERATION_NAME, ATTR_OPERATION_TYPE, inSpan } from "../telemetry/tracer.js";

const nextId = monotonicFactory();

/** What a server that cannot run a type lacks, as a refusal says it. */
const missingExecutor: ReadonlyMap<OperationType, string> = new Map([
  [OperationType.CONTAINER_RUN, "no container runtime is configured (amctl serve --container-runtime)"],
]);

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
  store: StoreOperations & StoreAccounts;
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
  /** The server's data dir, which no mount may reach. */
  dataDir: string;
}

/** The spec with its mounts replaced by the admitted ones (host paths resolved). */
function withMounts(spec: OperationSpec, mounts: Mount[]): OperationSpec {
  const admitted = clone(OperationSpecSchema, spec);
  if (admitted.kind.case === "executionStart" || admitted.kind.case === "containerRun") admitted.kind.value.mounts = mounts;
  return admitted;
}

/**
 * The operation a cancel or a revoke targets, checked for what that command needs of it — once
 * the caller may see it: a target out of its scope is NotFound, whatever state it is in.
 */
async function targetOf(spec: OperationSpec["kind"], store: StoreOperations, principal: Principal): Promise<Operation | undefined> {
  if (spec.case === "executionCancel") {
    const target = await visibleOperation(store, principal, spec.value.target);
    if (!isExecution(target.type)) throw targetNotAllowed("spec.execution_cancel.target", `${target.name} is not an execution`);
    requireNotEnded(target);
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

async function admitOrRefuse(
  request: SubmitOperationRequest,
  type: OperationType,
  { store, defaultBudget, principal, policy, executable, workerSelectors, sandboxUnavailable: noSandbox, dataDir }: AdmissionContext,
): Promise<Admitted> {
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
  // With --workers every execution runs on a remote worker; containers always run here.
  const mounts =
    spec.case === "executionStart" || spec.case === "containerRun"
      ? admitMounts(spec.value.mounts, spec.case === "executionStart" ? "spec.execution_start.mounts" : "spec.container_run.mounts", {
          principal,
          dataDir,
          remote: spec.case === "executionStart" && workerSelectors,
        })
      : [];
  const target = await targetOf(spec, store, principal);
  if (target?.artifact?.kind.case === "toolGrantRecord") requireOperation(principal, { type, profile, tool: target.artifact.kind.value.tool });
  requireSeparation({ profile, profileType: stored.profileType, spec, ...(target ? { target } : {}) });

  const where = { principal, profile, profileType: stored.profileType };
  const asked = { type, spec: request.spec, labels: request.labels };
  // The artifactAccess gate decides each mount, with its resolved host path in the input.
  const policyDecisions = [
    ...policy.decide(stored.profileType, gatesForOperation(spec), operationInput(where, asked)),
    ...mounts.flatMap((mount) => policy.decide(stored.profileType, ["artifactAccess"], mountInput(where, asked, mount))),
  ];
  const denied = policyDecisions.find((decision) => !decision.allowed);
  if (denied !== undefined) throw policyDenied(denied);

  if (!executable.has(type)) throw noExecutor(operationTypeNames.get(type)!, missingExecutor.get(type) ?? "it has no executor for it");
  if (spec.case === "executionStart" && noSandbox !== undefined) throw sandboxUnavailable(noSandbox);
  if (spec.case === "executionStart" && !workerSelectors && Object.keys(spec.value.workerSelector).length > 0) throw workersDisabled();

  const now = new Date();
  // What an execution leaves at 0 gets the server's default, but never more than its delegation
  // and its profile can still give (src/governance/budget-ledger.ts).
  const defaults = isExecution(type) ? await executionDefaults(store, defaultBudget, principal, stored, now) : defaultBudget;
  const operation: Operation = create(OperationSchema, {
    name: operationName(nextId()),
    requestId: request.requestId,
    type,
    profile,
    spec: mounts.length > 0 ? withMounts(request.spec!, mounts) : request.spec,
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
    ...(isExecution(type) ? { reservation: reservationFor(operation, principal, stored) } : {}),
  };
}
