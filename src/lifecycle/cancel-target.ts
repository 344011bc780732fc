// A task that has ended cannot be cancelled: the one check CancelOperation, the admission of
// an execution.cancel and the runner's cancel all make (each at its own moment, since the
// target may end in between).
import type { Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { illegalTransition } from "./errors.js";
import { isTerminal } from "../model/transitions.js";

/** FailedPrecondition (illegal transition) when `target` has already ended. */
export function requireNotEnded(target: Pick<Operation, "name" | "state">): void {
  if (isTerminal(target.state)) throw illegalTransition(target.name, target.state, "cancel");
}
