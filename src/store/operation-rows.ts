// The rules both stores apply to operations, events and profiles, in one place: what a row holds
// and what a message becomes in it, what a create answers when its request id is taken, and what
// a modification makes of the current operation. The backends only run the statements (SQLite in
// one synchronous savepoint, PostgreSQL under its row locks); the decisions are made here.
import { clone, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BudgetSchema } from "../gen/agentmachine/v1/budget_pb.js";
import { OperationEventSchema, type OperationEvent } from "../gen/agentmachine/v1/event_pb.js";
import { OperationSchema, type Operation } from "../gen/agentmachine/v1/operation_pb.js";
import { TaskState } from "../gen/agentmachine/v1/types_pb.js";
import { isTerminal } from "../model/transitions.js";
import { decodeOperation, decodeStoredEvent, eventDataForm, labelsOf, RowEvent } from "./stored-messages.js";
import type { CreateResult, Modification, NewOperation, Settlement, StoredEvent, StoredProfile } from "./store.js";

/** The states an operation never leaves, as both stores' queries for active operations name them. */
export const TERMINAL_STATES: readonly TaskState[] = [TaskState.CANCELLED, TaskState.FAILED, TaskState.COMPLETED];

/** The columns of an operation's row, in the order of operationRowValues. */
export const OPERATION_COLUMNS = "name, idempotency_scope, request_id, request_digest, type, state, profile, labels, data";

export function operationRowValues(input: NewOperation, operation: Operation): [string, string, string, string, number, number, string, string, Uint8Array] {
  return [
    operation.name,
    input.idempotencyScope,
    operation.requestId,
    input.requestDigest,
    operation.type,
    operation.state,
    operation.profile,
    JSON.stringify(operation.labels),
    toBinary(OperationSchema, operation),
  ];
}

/** The values of `UPDATE operations SET state = ·, data = · WHERE name = ·`. */
export function operationUpdateValues(operation: Operation): [number, Uint8Array, string] {
  return [operation.state, toBinary(OperationSchema, operation), operation.name];
}

/** The operations of rows selected as not terminal, oldest first: a row a newer server wrote in a state this one does not know is left out. */
export function activeOperations(rows: readonly { data: Uint8Array }[]): Operation[] {
  return rows.map((row) => decodeOperation(row.data)).filter((operation) => !isTerminal(operation.state));
}

/** What a create answers when its request id was used already in its scope (`row`). */
export function existingOperation(row: { request_digest: string; data: Uint8Array }, requestDigest: string): CreateResult {
  const operation = decodeOperation(row.data);
  return row.request_digest === requestDigest ? { kind: "existing", operation } : { kind: "request-id-conflict", operation };
}

/** The values of a profile's row (name, profile_type, operation, budget) that `operation` creates. */
export function profileRowValues(createsProfile: NonNullable<NewOperation["createsProfile"]>, operation: string): [string, number, string, Uint8Array | null] {
  const { name, profileType, budget } = createsProfile;
  return [name, profileType, operation, budget ? toBinary(BudgetSchema, budget) : null];
}

export function profileFromRow(row: { name: string; profile_type: number | bigint; budget: Uint8Array | null }): StoredProfile {
  return { name: row.name, profileType: Number(row.profile_type), ...(row.budget ? { budget: fromBinary(BudgetSchema, row.budget) } : {}) };
}

/** When an event happened, in milliseconds (its `time_ms` column): now for an event without a time. */
export function eventTimeMs(event: OperationEvent): number {
  return event.time ? Number(event.time.seconds) * 1000 + Math.floor(event.time.nanos / 1e6) : Date.now();
}

/** The columns of an event's row without its sequence, in the order of eventRowValues. */
export const EVENT_COLUMNS = "operation, time_ms, profile, operation_type, labels, data, event_type, state, data_form";

/**
 * The values of `event`'s row: it carries what filters need to know of its operation, and the
 * event's own type and state, so that a replay's filter runs in the query (EventSelection). Its
 * data is the event's encoding without its sequence (the event is appended before it has one),
 * and its data_form says whether a replay may send that as it is.
 */
export function eventRowValues(operation: Operation, event: OperationEvent): [string, number, string, number, string, Uint8Array, number, number, number] {
  return [
    operation.name,
    eventTimeMs(event),
    operation.profile,
    operation.type,
    JSON.stringify(operation.labels),
    toBinary(OperationEventSchema, event),
    event.type,
    event.state,
    eventDataForm(event),
  ];
}

/** An event's row as read (SQLite returns `labels` as its JSON text, PostgreSQL as the object). */
export interface EventRow {
  sequence: bigint | number;
  profile: string;
  operation_type: number | bigint;
  labels: string | Record<string, string>;
  data: Uint8Array;
  data_form: number | bigint;
}

/** The event of `row`, decoded at once: for events many subscribers share (the store's readEvents, the event feed). */
export function eventFromRow(row: EventRow): StoredEvent {
  return {
    event: decodeStoredEvent(row.data, BigInt(row.sequence), Number(row.data_form)),
    profile: row.profile,
    operationType: Number(row.operation_type),
    labels: labelsOf(row.labels),
  };
}

/** The event of `row` as a replay's page holds it: decoded only if something asks for it (RowEvent). */
export function pageEventFromRow(row: EventRow): RowEvent {
  return new RowEvent(BigInt(row.sequence), row.profile, Number(row.operation_type), row.labels, row.data, Number(row.data_form));
}

/** `event` as appended with `sequence`; `operation` is given it as its last sequence. */
export function appendedEvent(operation: Operation, event: OperationEvent, sequence: bigint): StoredEvent {
  operation.lastSequence = sequence;
  return { event: { ...event, sequence }, profile: operation.profile, operationType: operation.type, labels: { ...operation.labels } };
}

/** What `modify` makes of `current`: the new form to write (a copy of the one `modify` returned), or nothing to write. */
export function modification(current: Operation, modify: Modification): { operation: Operation; event?: OperationEvent; settle?: Settlement } | undefined {
  const change = modify(clone(OperationSchema, current));
  return change && { ...change, operation: clone(OperationSchema, change.operation) };
}

/** A write's answer that carries the event it appended, if it appended one. */
export function withEvent<K extends string>(
  kind: K,
  operation: Operation,
  event: StoredEvent | undefined,
): { kind: K; operation: Operation; event?: StoredEvent } {
  return { kind, operation, ...(event ? { event } : {}) };
}
