// Operations and events as both stores read them back: decoded, with what versions before 0.x
// wrote in their place. Those versions wrote StopCause.reason and PolicyDecision.gate as strings
// in field 1 (`runner_lost`, `toolGrant`); the fields are enums now, under new numbers, and a
// stored string comes back as an unknown field 1, which is read here into the enum. Rows are
// left as written (a read-time mapping, no migration): a row rewritten later is written in the
// new form.
import { fromBinary, type Message } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
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

export function decodeEvent(data: Uint8Array): OperationEvent {
  const event = fromBinary(OperationEventSchema, data);
  const { attributes } = event;
  if (attributes.case === "failure" || attributes.case === "retry" || attributes.case === "cancel") upgradeCause(attributes.value.cause);
  if (attributes.case === "start") upgradeDecisions(attributes.value.policyDecisions);
  return event;
}
