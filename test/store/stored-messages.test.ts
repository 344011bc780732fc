// An event row's bytes serve as the event's encoding (decodeStoredEvent, storedEncoding) only when
// they are exactly what toBinary writes for the decoded event once given its sequence: a replay
// sends them as they are, so a row they do not describe exactly must be encoded again.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { OperationEventSchema, RetryAttributesSchema, type OperationEvent } from "../../src/gen/agentmachine/v1/event_pb.js";
import { StopCauseSchema, StopReason } from "../../src/gen/agentmachine/v1/operation_pb.js";
import { EventType, TaskState } from "../../src/gen/agentmachine/v1/types_pb.js";
import { decodeStoredEvent, storedEncoding } from "../../src/store/stored-messages.js";
import { eventsWithEveryField } from "./conformance.js";

/** A row's `data` as the store writes it: the event without its sequence. */
const rowOf = (event: OperationEvent): Uint8Array => toBinary(OperationEventSchema, { ...event, sequence: 0n });

/** The event decoded from `data` as `sequence`, checked to be sent exactly as toBinary writes it; whether its stored bytes serve. */
function decodedExactly(data: Uint8Array, sequence: bigint): { event: OperationEvent; storedBytesServe: boolean } {
  const event = decodeStoredEvent(data, sequence);
  const stored = storedEncoding(event);
  if (stored !== undefined) {
    expect(Buffer.from(stored).equals(Buffer.from(toBinary(OperationEventSchema, event)))).toBe(true);
    expect(fromBinary(OperationEventSchema, stored)).toEqual(event);
  }
  return { event, storedBytesServe: stored !== undefined };
}

describe("an event row's stored bytes as the event's encoding", () => {
  it("serve for an event with every field set, of every attributes case, which they decode to exactly", () => {
    for (const [index, written] of eventsWithEveryField("operations/every-field").entries()) {
      const sequence = 2n ** BigInt(7 * index) + 1n;
      const { event, storedBytesServe } = decodedExactly(rowOf(written), sequence);
      expect(storedBytesServe).toBe(true);
      expect(event).toEqual({ ...written, sequence });
    }
  });

  it("serve for any event this schema writes", () => {
    const event = fc.record({
      operation: fc.string(),
      type: fc.constantFrom(...Object.values(EventType).filter((value) => typeof value === "number")),
      state: fc.constantFrom(...Object.values(TaskState).filter((value) => typeof value === "number")),
      time: fc.option(fc.integer({ min: 0, max: 4_000_000_000_000 }), { nil: undefined }),
      attempt: fc.nat(),
      message: fc.option(fc.string({ unit: "binary" }), { nil: undefined }),
      percent: fc.option(fc.nat({ max: 100 }), { nil: undefined }),
    });
    fc.assert(
      fc.property(event, fc.bigInt({ min: 1n, max: 2n ** 63n - 1n }), (init, sequence) => {
        const written = create(OperationEventSchema, {
          operation: init.operation,
          type: init.type,
          state: init.state,
          attempt: init.attempt,
          ...(init.time === undefined ? {} : { time: timestampFromMs(init.time) }),
          ...(init.message === undefined ? {} : { attributes: { case: "progress", value: { message: init.message, percent: init.percent } } }),
        });
        const { event: read, storedBytesServe } = decodedExactly(rowOf(written), sequence);
        expect(storedBytesServe).toBe(true);
        expect(read).toEqual({ ...written, sequence });
      }),
    );
  });

  it("do not serve for a row a newer writer wrote with a field this schema does not know, in its place among the fields", () => {
    const [written] = eventsWithEveryField("operations/newer");
    // Fields 2–6, then the newer writer's field 7, then the attributes (field 10): field order.
    const before = toBinary(OperationEventSchema, { ...written!, attributes: { case: undefined } });
    const unknown = new BinaryWriter().tag(7, WireType.Varint).uint32(42).finish();
    const after = toBinary(OperationEventSchema, create(OperationEventSchema, { attributes: written!.attributes }));
    const { event, storedBytesServe } = decodedExactly(Uint8Array.from([...before, ...unknown, ...after]), 9n);
    expect(storedBytesServe).toBe(false);
    expect(event).toEqual({ ...written, sequence: 9n, $unknown: [{ no: 7, wireType: WireType.Varint, data: Uint8Array.of(42) }] });
  });

  it("do not serve for a row with an unknown field in a nested message", () => {
    const written = eventsWithEveryField("operations/nested")[2]!;
    const cause = (written.attributes.value as { cause: { $unknown?: unknown } }).cause;
    cause.$unknown = [{ no: 9, wireType: WireType.Varint, data: Uint8Array.of(1) }];
    expect(decodedExactly(rowOf(written), 3n).storedBytesServe).toBe(false);
  });

  it("do not serve for a row of a version before 0.x, whose old fields are read into their new form", () => {
    const cause = create(StopCauseSchema, { message: "the runner stopped" });
    cause.$unknown = [{ no: 1, wireType: WireType.LengthDelimited, data: new BinaryWriter().string("runner_lost").finish() }];
    const written = create(OperationEventSchema, {
      operation: "operations/old",
      attributes: { case: "retry", value: create(RetryAttributesSchema, { cause }) },
    });
    const { event, storedBytesServe } = decodedExactly(rowOf(written), 4n);
    expect(storedBytesServe).toBe(false);
    expect(event.attributes.value).toMatchObject({ cause: { reason: StopReason.RUNNER_LOST, message: "the runner stopped" } });
  });

  it("do not serve for a row that holds a sequence: the row's own sequence replaces it", () => {
    const [written] = eventsWithEveryField("operations/sequenced");
    const { event, storedBytesServe } = decodedExactly(toBinary(OperationEventSchema, { ...written!, sequence: 77n }), 5n);
    expect(storedBytesServe).toBe(false);
    expect(event.sequence).toBe(5n);
  });
});
