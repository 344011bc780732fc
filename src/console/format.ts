// How values of the API read on the page.
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { BudgetSchema, type Budget } from "../gen/agentmachine/v1/budget_pb.js";
import { OperationType, TaskState } from "../gen/agentmachine/v1/types_pb.js";

/** An enum value's name in lower case (`RUNNING` → `running`); protobuf-es enums map numbers to names. */
export function enumName(values: Record<number, string>, value: number): string {
  return (values[value] ?? String(value)).toLowerCase();
}

/** The values of an enum but UNSPECIFIED, as [number, name] pairs for a select. */
export function enumChoices(values: Record<string, string | number>): [string, string][] {
  return Object.entries(values)
    .filter((entry): entry is [string, number] => typeof entry[1] === "number" && entry[1] !== 0)
    .map(([name, value]) => [String(value), name.toLowerCase()]);
}

export const stateName = (state: TaskState): string => enumName(TaskState, state);
export const typeName = (type: OperationType): string => enumName(OperationType, type);

export function time(timestamp: Timestamp | undefined): string {
  return timestamp === undefined
    ? ""
    : timestampDate(timestamp)
        .toISOString()
        .replace("T", " ")
        .replace(/\.\d+Z$/, "Z");
}

/** The budget dimensions in their order in budget.proto, with their field names and labels. */
export const budgetDimensions = BudgetSchema.fields.map((field) => ({
  key: field.localName as Exclude<keyof Budget, "$typeName" | "$unknown">,
  label: field.name.replaceAll("_", " "),
}));

/** A budget's non-zero dimensions, `tokens 5000, wall clock seconds 60`; "none" when all are 0. */
export function budgetSummary(budget: Budget | undefined): string {
  const parts = budgetDimensions.filter(({ key }) => (budget?.[key] ?? 0n) > 0n).map(({ key, label }) => `${label} ${budget![key]}`);
  return parts.length > 0 ? parts.join(", ") : "none";
}
