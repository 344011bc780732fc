// Encode once, write many: an event that goes to many binary watch streams is serialized once.
// The event's bytes are kept beside the (shared, never mutated) event object the EventHub hands
// to every subscriber, and each response carries them as the raw bytes of its event field —
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

/** Each event's encoding as a length-delimited field value (its length, then its bytes). */
const encodings = new WeakMap<OperationEvent, Uint8Array>();

function lengthDelimited(event: OperationEvent): Uint8Array {
  let encoded = encodings.get(event);
  if (encoded === undefined) {
    encoded = new BinaryWriter().bytes(toBinary(OperationEventSchema, event)).finish();
    encodings.set(event, encoded);
  }
  return encoded;
}

/**
 * A response made by withEncodedEvent → its gRPC frame (uncompressed envelope: flags 0, length,
 * the response's binary encoding), made once per event and field and shared by every stream.
 */
const frames = new WeakMap<object, Uint8Array>();
const framesByEvent = new WeakMap<OperationEvent, Map<number, Uint8Array>>();

/** A response's binary encoding → its uncompressed gRPC frame. */
function uncompressedFrame(response: Uint8Array): Uint8Array {
  const frame = new Uint8Array(5 + response.byteLength);
  new DataView(frame.buffer).setUint32(1, response.byteLength);
  frame.set(response, 5);
  return frame;
}

function frameOf(event: OperationEvent, fieldNumber: number): Uint8Array {
  let byField = framesByEvent.get(event);
  if (byField === undefined) framesByEvent.set(event, (byField = new Map()));
  let frame = byField.get(fieldNumber);
  if (frame === undefined) {
    frame = uncompressedFrame(new BinaryWriter().tag(fieldNumber, WireType.LengthDelimited).raw(lengthDelimited(event)).finish());
    byField.set(fieldNumber, frame);
  }
  return frame;
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
 * A `schema` response whose field `fieldNumber` (an OperationEvent) is `event`, already
 * encoded: for binary calls only (see answersInBinary).
 */
export function withEncodedEvent<Desc extends DescMessage>(schema: Desc, fieldNumber: number, event: OperationEvent): MessageShape<Desc> {
  const message = create(schema);
  message.$unknown = [{ no: fieldNumber, wireType: WireType.LengthDelimited, data: lengthDelimited(event) }];
  frames.set(message, frameOf(event, fieldNumber));
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
    return this.write(events.map((stored) => frameOf(stored.event, this.fieldNumber)));
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
