// A replay's row of exact data is framed from its bytes, never decoded (RowEvent, frameOf): the
// frame must be byte for byte what encoding the decoded event gives, at every varint width of
// the sequence, and a row not known to be exact must go the encoding way. A filter that sets no
// event field must not decode the row at all: those rows are what a replay from the store sends.
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import { type OperationEvent, OperationEventSchema } from "../../src/gen/agentmachine/v1/event_pb.js";
import { EventFilterSchema, WatchEventsResponseSchema } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { OperationType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { matchesEventFilter } from "../../src/lifecycle/event-filter.js";
import { sharedFrame, withEncodedEvent } from "../../src/services/encoded-events.js";
import { EXACT_EVENT_DATA, eventDataForm, RowEvent } from "../../src/store/stored-messages.js";
import { eventsWithEveryField } from "../store/conformance.js";

const EVENT_FIELD = WatchEventsResponseSchema.field.event.number;

/** A row as the store writes `event`: its encoding without the sequence, and its data_form. */
function rowEvent(event: OperationEvent, sequence: bigint): RowEvent {
  const unsequenced = { ...event, sequence: 0n };
  const data = toBinary(OperationEventSchema, unsequenced);
  return new RowEvent(sequence, "profiles/p", OperationType.EXECUTION_START, '{"team":"a"}', data, eventDataForm(unsequenced));
}

/** The gRPC frame a connect-node handler writes for the response carrying `event`. */
function expectedFrame(event: OperationEvent): Buffer {
  const body = toBinary(WatchEventsResponseSchema, create(WatchEventsResponseSchema, { kind: { case: "event", value: event } }));
  const frame = Buffer.alloc(5 + body.byteLength);
  frame.writeUInt32BE(body.byteLength, 1);
  frame.set(body, 5);
  return frame;
}

function frameOf(stored: RowEvent): Buffer {
  return Buffer.from(sharedFrame(withEncodedEvent(WatchEventsResponseSchema, EVENT_FIELD, stored))!);
}

describe("a replay row's frame", () => {
  // 1 and 2⁷−1 take one varint byte, 2⁷ two, 2⁵³−1 the last safe integer, 2⁵³+1 and 2⁶³−1 the
  // decoding path.
  const sequences = [1n, 127n, 128n, 16_383n, 16_384n, 2n ** 53n - 1n, 2n ** 53n + 1n, 2n ** 63n - 1n];

  it("is byte for byte the encoding of its decoded event, for every attributes case and sequence width", () => {
    for (const written of eventsWithEveryField("operations/framed")) {
      for (const sequence of sequences) {
        const row = rowEvent(written, sequence);
        expect(row.exactData()).toBeDefined();
        expect(frameOf(row).toString("hex")).toBe(expectedFrame({ ...written, sequence }).toString("hex"));
      }
    }
  });

  it("of an event with a field this schema does not know is encoded from the decoded event, unknown field included", () => {
    const [written] = eventsWithEveryField("operations/unknown");
    written!.$unknown = [{ no: 7, wireType: WireType.Varint, data: Uint8Array.of(42) }];
    const row = rowEvent(written!, 300n);
    expect(eventDataForm({ ...written!, sequence: 0n })).toBe(0);
    expect(row.exactData()).toBeUndefined();
    expect(frameOf(row).toString("hex")).toBe(expectedFrame({ ...written!, sequence: 300n }).toString("hex"));
  });

  it("is not made from the bytes of an event that already holds a sequence: its row is not exact", () => {
    const [written] = eventsWithEveryField("operations/sequenced");
    expect(eventDataForm({ ...written!, sequence: 5n })).toBe(0);
  });
});

describe("a replay row", () => {
  // Bytes that are no protobuf message at all (a length running past the end), marked exact: any
  // decoding of them throws.
  const undecodable = new BinaryWriter().tag(2, WireType.LengthDelimited).uint32(200).finish();
  const row = () => new RowEvent(9n, "profiles/p", OperationType.EXECUTION_START, '{"team":"a"}', undecodable, EXACT_EVENT_DATA);

  it("is matched by a filter of profile, operation type and labels, and framed, without being decoded", () => {
    const filter = create(EventFilterSchema, { profile: "profiles/p", operationTypes: [OperationType.EXECUTION_START], labels: { team: "a" } });
    expect(matchesEventFilter(filter, row())).toBe(true);
    expect(matchesEventFilter(create(EventFilterSchema, { labels: { team: "b" } }), row())).toBe(false);
    expect(frameOf(row()).subarray(-undecodable.byteLength)).toEqual(Buffer.from(undecodable));
  });

  it("is decoded when a filter reads the event's own fields", () => {
    expect(() => matchesEventFilter(create(EventFilterSchema, { operations: ["operations/x"] }), row())).toThrow();
  });
});
