// Which operation types are executions: the ones that run a workload, spend a budget, wait
// for a concurrency slot, and that execution.cancel may target. Every other type is a record
// or a command, which reserves nothing and runs at once.
import { OperationType } from "../gen/agentmachine/v1/types_pb.js";

const executions: ReadonlySet<OperationType> = new Set([OperationType.EXECUTION_START, OperationType.CONTAINER_RUN]);

export function isExecution(type: OperationType): boolean {
  return executions.has(type);
}
