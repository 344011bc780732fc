// Charges a running operation's usage in one store commit, so concurrent calls never
// overspend: RuntimeService (calls an agent reports) and the egress proxy (connections the plane
// sees) both charge through here. When a charge exhausts a dimension the task is ended.
import type { AuditDraft } from "../model/audit-chain.js";
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { OperationEventSchema, ProgressAttributesSchema, type BudgetWarning } from "../gen/agentmachine/v1/event_pb.js";
import { EventType, TaskState } from "../gen/agentmachine/v1/types_pb.js";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { dimensionEnum, exhaustionMessage, type Charge } from "../governance/runtime-charging.js";
import type { StoreOperations } from "../store/store.js";
import { invalidField } from "../api/errors.js";
import { operationNotFound } from "./errors.js";
import type { OperationRunner } from "./operation-runner.js";

/** The progress event that carries budget warnings. */
function warningEvent(operation: Operation, warnings: BudgetWarning[]) {
  return create(OperationEventSchema, {
    operation: operation.name,
    type: EventType.PROGRESS,
    state: TaskState.RUNNING,
    time: timestampFromDate(new Date()),
    attempt: operation.attempt,
    attributes: { case: "progress", value: create(ProgressAttributesSchema, { message: "budget warning: over 80 % used", budgetWarnings: warnings }) },
  });
}

export interface ChargeResult {
  operation: Operation;
  outcome: Charge;
}

/**
 * Applies `compute`'s charge to the stored usage. `always` records the usage even when it
 * exhausts a dimension (reported usage was really spent; its accounts are charged no more than
 * the budget when it settles, and the stop cause says how far over it went); otherwise an
 * exhausting charge is refused and charges nothing. The audit record commits with the charge, if there is one.
 * Undefined outcome: the operation is not running (the caller says so its own way).
 */
export async function chargeOperation(
  deps: { store: StoreOperations; runner: OperationRunner },
  name: string,
  compute: (operation: Operation) => Charge,
  always: boolean,
  audit: AuditDraft | undefined,
  onceKey?: string,
): Promise<{ operation: Operation; outcome: Charge | undefined }> {
  let outcome: Charge | undefined;
  const result = await deps.store.modifyOperation(
    name,
    (operation) => {
      if (operation.state !== TaskState.RUNNING) return undefined;
      outcome = compute(operation);
      if (outcome.kind === "exhausted" && !always) return undefined;
      operation.usage = outcome.usage;
      const warnings = outcome.kind === "within" ? outcome.warnings : [];
      return { operation, ...(warnings.length > 0 ? { event: warningEvent(operation, warnings) } : {}) };
    },
    onceKey,
    audit,
  );
  if (result.kind === "not-found") throw operationNotFound(name);
  if (result.kind === "already-done") throw invalidField("call_ticket", "was already reported");
  if (outcome?.kind === "exhausted") {
    deps.runner.stopForBudget(name, dimensionEnum(outcome.dimension), exhaustionMessage(outcome, always));
  }
  return { operation: result.operation, outcome };
}
