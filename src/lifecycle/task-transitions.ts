// Every change of a task's state goes through transition(), which checks the one table of
// legal transitions (transitions.ts) and commits the new state with its event in one write.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { OperationEventSchema } from "../gen/agentmachine/v1/event_pb.js";
import { StopCauseSchema, type StopReason, type Operation, type StopCause } from "../gen/agentmachine/v1/operation_pb.js";
import { TaskState } from "../gen/agentmachine/v1/types_pb.js";
import { BudgetDimension } from "../gen/agentmachine/v1/budget_pb.js";
import type { Modification, StoreOperations } from "../store/store.js";
import { settlementFor } from "../governance/budget-ledger.js";
import { illegalTransition } from "./errors.js";
import { isExecution } from "../model/execution-types.js";
import { isTerminal, transitionEvent } from "../model/transitions.js";

export type Attributes = MessageInitShape<typeof OperationEventSchema>["attributes"];

export function cause(reason: StopReason, message: string, dimension = BudgetDimension.UNSPECIFIED): StopCause {
  return create(StopCauseSchema, { reason, message, dimension });
}

/**
 * Moves `operation` from its state to `to` with its event, if that transition is legal and
 * nobody moved it meanwhile (same state, same attempt, same runner: a runner taken for dead
 * cannot end the attempt another runner has started since). A read-modify-write in one
 * commit, so usage charged at runtime (RuntimeService) is never overwritten; an execution
 * that ends settles its budget there too.
 */
export async function transition(
  store: StoreOperations,
  operation: Operation,
  to: TaskState,
  attributes: Attributes,
  change: (op: Operation) => void = () => {},
): Promise<Operation | undefined> {
  const result = await store.modifyOperation(operation.name, transitionChange(operation, to, attributes, change));
  return result.kind === "modified" ? result.operation : undefined;
}

export function transitionChange(operation: Operation, to: TaskState, attributes: Attributes, change: (op: Operation) => void): Modification {
  const from = operation.state;
  const type = transitionEvent(from, to);
  if (type === undefined) throw illegalTransition(operation.name, from, `move to ${TaskState[to].toLowerCase()}`);
  return (next) => {
    if (next.state !== from || next.attempt !== operation.attempt || next.runner !== operation.runner) return undefined;
    next.state = to;
    change(next);
    const ends = isTerminal(to);
    if (ends) next.endTime = timestampFromDate(new Date());
    const event = create(OperationEventSchema, {
      operation: operation.name,
      type,
      state: to,
      time: timestampFromDate(new Date()),
      attempt: next.attempt,
      attributes,
    });
    return { operation: next, event, ...(ends && isExecution(next.type) ? { settle: settlementFor(next) } : {}) };
  };
}
