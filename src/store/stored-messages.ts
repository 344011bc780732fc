// Operations and events as both stores read them back: decoded, with what versions before 0.x
// wrote in their place. Those versions wrote StopCause.reason and PolicyDecision.gate as strings
// in field 1 (`runner_lost`, `toolGrant`); the fields are enums now, under new numbers, and a
// stored string comes back as an unknown field 1, which is read here into the enum. Rows are
// left as written (a read-time mapping, no migration): a row rewritten later is written in the
// new form.
import { fromBinary, type Message } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { OperationEventSchema, type OperationEvent } from "../gen/agentmachine/v1/event_pb.js";
import { OperationSchema, type Operation, type PolicyDecision, type StopCause } from "../gen/agentmachine/v1/operation_pb.js";
import type { OperationType } from "../gen/agentmachine/v1/types_pb.js";
import { policyGates, type Gate } from "../model/policy-gates.js";
import { stopReasonOf } from "../model/stop-reasons.js";
import type { StoredEvent } from "./store.js";

/** The string versions before 0.x wrote in field 1 of `message`, taken out of its unknown fields. */
function takeLegacyString(message: Message): string | undefined {
  const index = message.$unknown?.findIndex((field) => field.no === 1 && field.wireType === WireType.LengthDelimited) ?? -1;
  if (index < 0) return undefined;
  const [field] = message.$unknown!.splice(index, 1);
  if (message.$unknown!.length === 0) delete message.$unknown;
  return new BinaryReader(field!.data).string();
}

function upgradeCause(cause: StopCause | undefined): void {
  const legacy = cause && takeLegacyString(cause);
  if (legacy !== undefined) cause!.reason = stopReasonOf(legacy);
}

function upgradeDecisions(decisions: readonly PolicyDecision[]): void {
  for (const decision of decisions) {
    const legacy = takeLegacyString(decision);
    if (legacy !== undefined) decision.gate = policyGates.get(legacy as Gate) ?? decision.gate;
  }
}

export function decodeOperation(data: Uint8Array): Operation {
  const operation = fromBinary(OperationSchema, data);
  upgradeCause(operation.stopCause);
  upgradeDecisions(operation.policyDecisions);
  return operation;
}

function upgradeEvent(event: OperationEvent): void {
  const { attributes } = event;
  if (attributes.case === "failure" || attributes.case === "retry" || attributes.case === "cancel") upgradeCause(attributes.value.cause);
  if (attributes.case === "start") upgradeDecisions(attributes.value.policyDecisions);
}

/** Whether `value` (a decoded message, or anything in one) holds unknown fields anywhere. */
function holdsUnknownFields(value: unknown): boolean {
  if (typeof value !== "object" || value === null || value instanceof Uint8Array) return false;
  if (Array.isArray(value)) return value.some(holdsUnknownFields);
  if ((value as Message).$unknown?.length) return true;
  for (const field in value) if (holdsUnknownFields((value as Record<string, unknown>)[field])) return true;
  return false;
}

/** The tag of OperationEvent.sequence (field 1, varint): one byte. */
export const SEQUENCE_TAG = (OperationEventSchema.field.sequence.number << 3) | WireType.Varint;

/** Events read from rows → their binary encoding, when the row held it (see decodeStoredEvent). */
const storedEncodings = new WeakMap<OperationEvent, Uint8Array>();

/**
 * The `data_form` of an event row (src/store/event-page.ts) whose data is exactly the event's
 * encoding without its sequence and holds nothing this schema does not know (eventDataForm). A
 * row of form 0 may not be: written before the column (perhaps in the form of versions before
 * 0.x), or of an event that carried unknown fields.
 */
export const EXACT_EVENT_DATA = 1;

/** The `data_form` of the row `event` is written as (toBinary of the event, which has no sequence yet). */
export function eventDataForm(event: OperationEvent): number {
  return event.sequence === 0n && !holdsUnknownFields(event) ? EXACT_EVENT_DATA : 0;
}

/**
 * An event row's `data`, stored without the sequence, decoded and given `sequence`. When the row
 * is what toBinary writes for the event without its sequence, the event's binary encoding is
 * the sequence field followed by `data` as stored (toBinary writes known fields in field-number
 * order, and sequence is field 1), and storedEncoding gives it for the event, so sending the
 * event needs no encoding. A row of `form` EXACT_EVENT_DATA is. A row written before that column
 * is when this server's schema reads it completely: no unknown field anywhere (protobuf-es writes
 * those last, so a newer writer's field may sit elsewhere in the row; a field of versions before
 * 0.x is one, which upgradeEvent reads into its new form) and no sequence. Other rows' events
 * have no stored encoding.
 */
export function decodeStoredEvent(data: Uint8Array, sequence: bigint, form = 0): OperationEvent {
  const event = fromBinary(OperationEventSchema, data);
  const canonical = form === EXACT_EVENT_DATA || (event.sequence === 0n && data[0] !== SEQUENCE_TAG && !holdsUnknownFields(event));
  event.sequence = sequence;
  if (canonical) {
    const field = new BinaryWriter().uint32(SEQUENCE_TAG).uint64(sequence).finish();
    // From Node's shared pool (every byte is written): a buffer of its own per event is a block
    // the garbage collector tracks one by one, a good part of a replay's cost.
    const encoded = Buffer.allocUnsafe(field.byteLength + data.byteLength);
    encoded.set(field);
    encoded.set(data, field.byteLength);
    storedEncodings.set(event, encoded);
  } else upgradeEvent(event);
  return event;
}

/**
 * The binary encoding of `event` (exactly what toBinary writes for it) when a store read it from
 * a row that held it; undefined for any other event. The event must not have been changed since.
 */
export function storedEncoding(event: OperationEvent): Uint8Array | undefined {
  return storedEncodings.get(event);
}

/** An event row's labels: SQLite reads the JSON text, PostgreSQL the object. */
export function labelsOf(column: string | Readonly<Record<string, string>>): Readonly<Record<string, string>> {
  return typeof column === "string" ? (JSON.parse(column) as Record<string, string>) : column;
}

/**
 * An event as a replay's page holds it: the row's columns, with the event decoded and the labels
 * parsed only when something asks for them. A replay's filter reads the event only for what the
 * query did not select exactly (src/lifecycle/event-filter.ts), and a binary stream sends a row
 * of EXACT_EVENT_DATA as its bytes (exactData), so most of a replay's rows are never decoded:
 * decoding them was most of what a replay from the store cost beyond what the window's costs.
 */
export class RowEvent implements StoredEvent {
  private decoded: OperationEvent | undefined;
  private parsedLabels: Readonly<Record<string, string>> | undefined;

  constructor(
    readonly sequence: bigint,
    readonly profile: string,
    readonly operationType: OperationType,
    private readonly labelsColumn: string | Readonly<Record<string, string>>,
    private readonly data: Uint8Array,
    private readonly form: number,
  ) {}

  get event(): OperationEvent {
    this.decoded ??= decodeStoredEvent(this.data, this.sequence, this.form);
    return this.decoded;
  }

  get labels(): Readonly<Record<string, string>> {
    this.parsedLabels ??= labelsOf(this.labelsColumn);
    return this.parsedLabels;
  }

  /** The row's data when the event's encoding is its sequence field followed by it; undefined otherwise. */
  exactData(): Uint8Array | undefined {
    return this.form === EXACT_EVENT_DATA ? this.data : undefined;
  }
}
