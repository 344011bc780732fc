// Encode once, write many: an event that goes to many binary watch streams is serialized once.
// The event's bytes are kept beside the (shared, never mutated) event object the EventHub hands
// to every subscriber (an event a replay read from the store has the encoding it was stored in,
// storedEncoding, and is not encoded at all), and each response carries them as
// the raw bytes of its event field —
// protobuf-es writes unknown fields verbatim, so the response's binary encoding is exactly that
// of the same response with the event set, without walking the event again. The lean gRPC path
// (src/server/lean-watch.ts) goes further and writes one shared frame of the whole response to
// every stream (sharedFrame), and lets the hub write those frames of live events straight to a
// sleeping subscription's stream (directDelivery). JSON responses cannot carry raw bytes, so for them the event is
// set as usual.
import { create, type DescMessage, type Message, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { HandlerContext } from "@connectrpc/connect";
import { type OperationEvent, OperationEventSchema } from "../gen/agentmachine/v1/event_pb.js";
import { type FrameSink, frameSinkOf } from "../call/frame-sink.js";
import type { StallGuard } from "../call/raw-request.js";
import type { DirectDelivery } from "../lifecycle/subscription.js";
import type { StoredEvent } from "../store/store.js";
import { RowEvent, SEQUENCE_TAG, storedEncoding } from "../store/stored-messages.js";

/**
 * A response made by withEncodedEvent → its gRPC frame (uncompressed envelope: flags 0, length,
 * the response's binary encoding), made once per event and field and shared by every stream.
 */
const frames = new WeakMap<object, Uint8Array>();
/** Field number → event → the frame of a response with the event in that field. */
const framesByField = new Map<number, WeakMap<OperationEvent, Uint8Array>>();

/** A response's binary encoding → its uncompressed gRPC frame. */
function uncompressedFrame(response: Uint8Array): Uint8Array {
  const frame = new Uint8Array(5 + response.byteLength);
  new DataView(frame.buffer).setUint32(1, response.byteLength);
  frame.set(response, 5);
  return frame;
}

/** The encoded tag of each length-delimited field number used. */
const tags = new Map<number, Uint8Array>();

function tagOf(fieldNumber: number): Uint8Array {
  let tag = tags.get(fieldNumber);
  if (tag === undefined) tags.set(fieldNumber, (tag = new BinaryWriter().tag(fieldNumber, WireType.LengthDelimited).finish()));
  return tag;
}

// Varints written in place: a frame is one buffer written once, where protobuf-es's BinaryWriter
// would build its parts in buffers of its own and copy them out.
function varintSize(value: number): number {
  let size = 1;
  for (let rest = value; rest >= 0x80; rest = Math.floor(rest / 0x80)) size++;
  return size;
}

function putVarint(into: Uint8Array, at: number, value: number): number {
  let rest = value;
  let next = at;
  for (; rest >= 0x80; rest = Math.floor(rest / 0x80)) into[next++] = (rest % 0x80) | 0x80;
  into[next++] = rest;
  return next;
}

/**
 * The frame of a response whose only field, `fieldNumber`, is an event encoded as its sequence
 * field (when `sequence` is given) followed by `encoded`: the envelope, the field's tag and
 * length, and the event, in one buffer from Node's shared pool (every byte written; a buffer of
 * its own per event would be a block the garbage collector tracks one by one).
 */
function eventFrame(fieldNumber: number, sequence: number | undefined, encoded: Uint8Array): Uint8Array {
  const tag = tagOf(fieldNumber);
  const eventSize = (sequence === undefined ? 0 : 1 + varintSize(sequence)) + encoded.byteLength;
  const bodySize = tag.byteLength + varintSize(eventSize) + eventSize;
  const frame = Buffer.allocUnsafe(5 + bodySize);
  frame[0] = 0;
  frame.writeUInt32BE(bodySize, 1);
  frame.set(tag, 5);
  let at = putVarint(frame, 5 + tag.byteLength, eventSize);
  if (sequence !== undefined) {
    frame[at++] = SEQUENCE_TAG;
    at = putVarint(frame, at, sequence);
  }
  frame.set(encoded, at);
  return frame;
}

/**
 * The frame of a response whose field `fieldNumber` is `event`, made once and shared: from the
 * encoding the store read the event from when it has that, else from toBinary's.
 */
function sharedEventFrame(event: OperationEvent, fieldNumber: number): Uint8Array {
  let byEvent = framesByField.get(fieldNumber);
  if (byEvent === undefined) framesByField.set(fieldNumber, (byEvent = new WeakMap()));
  let frame = byEvent.get(event);
  if (frame === undefined) byEvent.set(event, (frame = eventFrame(fieldNumber, undefined, storedEncoding(event) ?? toBinary(OperationEventSchema, event))));
  return frame;
}

/**
 * The frame of a response whose field `fieldNumber` is the event of `stored`. A replay's row of
 * exact data (RowEvent) is framed from its bytes, never decoded, and not kept: a history event
 * goes to one stream. Any other event's frame is shared (sharedEventFrame). A sequence beyond
 * 2⁵³ (never reached in practice) takes the shared path, so that varints stay in safe integers.
 */
function frameOf(stored: StoredEvent, fieldNumber: number): Uint8Array {
  const exactData = stored instanceof RowEvent ? stored.exactData() : undefined;
  if (exactData !== undefined && (stored as RowEvent).sequence <= Number.MAX_SAFE_INTEGER) {
    return eventFrame(fieldNumber, Number((stored as RowEvent).sequence), exactData);
  }
  return sharedEventFrame(stored.event, fieldNumber);
}

/** The shared uncompressed gRPC frame of a response withEncodedEvent made; undefined for any other message. */
export function sharedFrame(message: object): Uint8Array | undefined {
  return frames.get(message);
}

/** Whether the call's messages go out in the binary codec (every protocol names JSON in its content type). */
export function answersInBinary(context: HandlerContext): boolean {
  return !/[/+]json\b/.test(context.requestHeader.get("content-type") ?? "");
}

/**
 * A `schema` response whose field `fieldNumber` (an OperationEvent) is the event of `stored`,
 * already encoded: for binary calls only (see answersInBinary).
 */
export function withEncodedEvent<Desc extends DescMessage>(schema: Desc, fieldNumber: number, stored: StoredEvent): MessageShape<Desc> {
  const message = create(schema);
  const frame = frameOf(stored, fieldNumber);
  message.$unknown = [{ no: fieldNumber, wireType: WireType.LengthDelimited, data: frame.subarray(5 + tagOf(fieldNumber).byteLength) }];
  frames.set(message, frame);
  return message;
}

/**
 * Writes events to the call's stream as responses made by withEncodedEvent would be (their
 * shared frames), through the FrameSink the lean gRPC path gives the call. While the stream is
 * backed up (as when a yielded message waits for 'drain'), `guard` watches it and cuts off a
 * client that stopped reading, counting what is written meanwhile. A class, not closures: a
 * watch stream holds it for hours (see src/lifecycle/subscription.ts's Subscriber).
 */
class DirectFrames implements DirectDelivery {
  private written = 0;
  private drained: Promise<void> | undefined;

  constructor(
    private readonly sink: FrameSink,
    private readonly fieldNumber: number,
    private readonly guard: StallGuard,
    private readonly bookmarkResponse: BookmarkResponse | undefined,
  ) {}

  deliver(events: readonly StoredEvent[]): boolean {
    return this.write(events.map((stored) => frameOf(stored, this.fieldNumber)));
  }

  bookmark(sequence: bigint): boolean {
    if (this.bookmarkResponse === undefined) return false;
    const { schema, message } = this.bookmarkResponse(sequence);
    return this.write([uncompressedFrame(toBinary(schema, message))]);
  }

  private write(frames: Uint8Array[]): boolean {
    if (!this.sink.write(frames)) return false;
    for (const frame of frames) this.written += frame.byteLength;
    if (this.sink.backedUp()) void this.watchUntilDrained();
    return true;
  }

  writable(): boolean {
    return this.sink.writable();
  }

  ready(): Promise<void> {
    return this.sink.writable() ? Promise.resolve() : this.watchUntilDrained();
  }

  private watchUntilDrained(): Promise<void> {
    if (this.drained === undefined) {
      const stop = this.guard.watch(() => this.written);
      this.drained = this.sink.drained().finally(() => {
        stop();
        this.drained = undefined;
      });
    }
    return this.drained;
  }
}

/** A stream's bookmark response at `sequence` (the message it yields for one) and its schema. */
export type BookmarkResponse = (sequence: bigint) => { schema: DescMessage; message: Message };

/**
 * The call's DirectDelivery when the lean gRPC path gives it a FrameSink; `fieldNumber` is its
 * responses' event field, `bookmarkResponse` (for a stream that sends bookmarks) makes its
 * bookmarks, which are then written directly too.
 */
export function directDelivery(
  context: HandlerContext,
  fieldNumber: number,
  guard: StallGuard,
  bookmarkResponse?: BookmarkResponse,
): DirectDelivery | undefined {
  const sink = frameSinkOf(context);
  return sink === undefined ? undefined : new DirectFrames(sink, fieldNumber, guard, bookmarkResponse);
}
