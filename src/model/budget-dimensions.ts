// The eight budget dimensions, as Budget field names, in contract order.
import type { Budget } from "../gen/agentmachine/v1/budget_pb.js";

export type BudgetDimensionName = Exclude<keyof Budget, "$typeName" | "$unknown">;

export const budgetDimensions: readonly BudgetDimensionName[] = [
  "modelCalls",
  "tokens",
  "connectorCalls",
  "cpuGpuComputeSeconds",
  "localDiskBytes",
  "sandboxMemoryBytes",
  "wallClockSeconds",
  "agentConcurrency",
];
