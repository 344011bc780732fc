// Human output of operations and events, in the contract's spellings (mapping.ts), and the
// one-line proto JSON that `--json` prints.
import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { durationMs, timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { OperationEvent } from "../gen/agentmachine/v1/event_pb.js";
import type { Operation, StopCause } from "../gen/agentmachine/v1/operation_pb.js";
import { eventTypeNames, operationTypeNames, taskStateNames } from "../model/mapping.js";
import { stopReasonName } from "../model/stop-reasons.js";
import { errorDetailTypes } from "../api/errors.js";

/** One line of proto JSON. */
export function jsonLine<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): string {
  return JSON.stringify(toJson(schema, message, { registry: errorDetailTypes }));
}

/** The contract spelling of an enum value (one of the tables of mapping.ts). */
export function spelled<E extends number>(table: ReadonlyMap<E, string>, value: E): string {
  return table.get(value) ?? `unspecified(${value})`;
}

export const typeName = (operation: Operation): string => spelled(operationTypeNames, operation.type);
export const stateName = (operation: Pick<Operation, "state">): string => spelled(taskStateNames, operation.state);

export function timeText(time: Timestamp | undefined): string {
  return time === undefined ? "" : timestampDate(time).toISOString();
}

export function causeText(cause: StopCause | undefined): string {
  if (cause === undefined) return "";
  const reason = stopReasonName(cause.reason);
  return cause.message === "" ? reason : `${reason}: ${cause.message}`;
}

/** `key: value` lines of the fields a person looks at first. */
export function formatOperation(operation: Operation): string {
  const labels = Object.entries(operation.labels).map(([key, value]) => `${key}=${value}`);
  return formatFields([
    ["name", operation.name],
    ["type", typeName(operation)],
    ["state", stateName(operation)],
    ["profile", operation.profile],
    ["request id", operation.requestId],
    ["attempt", operation.attempt === 0 ? "" : String(operation.attempt)],
    ["labels", labels.join(", ")],
    ["created", timeText(operation.createTime)],
    ["ended", timeText(operation.endTime)],
    ["stop cause", causeText(operation.stopCause)],
  ]);
}

/** `key:    value` lines, values aligned; empty values are left out. */
export function formatFields(lines: [key: string, value: string][]): string {
  return lines
    .filter(([, value]) => value !== "")
    .map(([key, value]) => `${`${key}:`.padEnd(12)}${value}`)
    .join("\n");
}

/** Rows under a header, each column as wide as its widest cell. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)));
  return [header, ...rows]
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

export function formatOperationTable(operations: Operation[]): string {
  return formatTable(
    ["NAME", "TYPE", "STATE", "PROFILE", "CREATED"],
    operations.map((op) => [op.name, typeName(op), stateName(op), op.profile, timeText(op.createTime)]),
  );
}

function eventDetails(event: OperationEvent): string {
  const { attributes } = event;
  switch (attributes.case) {
    case "start":
      return `attempt ${event.attempt}`;
    case "progress":
      return [attributes.value.percent === undefined ? "" : `${attributes.value.percent}%`, attributes.value.message].filter(Boolean).join(" ");
    case "failure":
    case "cancel":
      return causeText(attributes.value.cause);
    case "retry":
      return `retry in ${attributes.value.delay ? durationMs(attributes.value.delay) / 1000 : 0} s after ${causeText(attributes.value.cause)}`;
    case "complete":
      return attributes.value.message;
    case undefined:
      return "";
  }
}

/** `#12 operations/… progress running 50% half`. */
export function formatEvent(event: OperationEvent): string {
  return [`#${event.sequence}`, event.operation, spelled(eventTypeNames, event.type), spelled(taskStateNames, event.state), eventDetails(event)]
    .filter(Boolean)
    .join("  ");
}
