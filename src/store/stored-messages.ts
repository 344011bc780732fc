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
import { policyGates, type Gate } from "../model/policy-gates.js";
import { stopReasonOf } from "../model/stop-reasons.js";

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

/** The tag of OperationEvent.sequence (field 1, varint). */
const SEQUENCE_TAG = (OperationEventSchema.field.sequence.number << 3) | WireType.Varint;

/** Events read from rows → their binary encoding, when the row held it (see decodeStoredEvent). */
const storedEncodings = new WeakMap<OperationEvent, Uint8Array>();

/**
 * An event row's `data`, stored without the sequence, decoded and given `sequence`. When the row
 * is what toBinary writes for the event without its sequence, the event's binary encoding is
 * the sequence field followed by `data` as stored (toBinary writes known fields in field-number
 * order, and sequence is field 1), and storedEncoding gives it for the event, so sending the
 * event needs no encoding. A row this server's schema reads completely is: no unknown field
 * anywhere (protobuf-es writes those last, so a newer writer's field may sit elsewhere in the
 * row; a field of versions before 0.x is one, which upgradeEvent reads into its new form) and no
 * sequence. Other rows' events have no stored encoding.
 */
export function decodeStoredEvent(data: Uint8Array, sequence: bigint): OperationEvent {
  const event = fromBinary(OperationEventSchema, data);
  const canonical = event.sequence === 0n && data[0] !== SEQUENCE_TAG && !holdsUnknownFields(event);
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
