// A minimal gRPC client for OperationService/WatchEvents over node:http2, for the stream
// benchmarks' subscriber processes. It speaks the standard wire protocol (HTTP/2, gRPC framing,
// grpc-status trailers) but skips a full client's per-message machinery: it reads each response's
// kind and event sequence straight from the bytes. A subscriber process must take in as many
// messages as the server sends to all of its streams; with connect-node's client that costs about
// as much CPU as serving them, so the subscribers, not the server, would set the pace (and be cut
// off as slow readers).
import * as http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { WatchEventsRequestSchema, WatchEventsResponseSchema } from "../src/gen/agentmachine/v1/operation_service_pb.js";

const WATCH_EVENTS_PATH = "/agentmachine.v1.OperationService/WatchEvents";
/** HTTP/2 error codes (RFC 9113 §7) by number, for messages. */
const errorCodeNames = [
  "NO_ERROR",
  "PROTOCOL_ERROR",
  "INTERNAL_ERROR",
  "FLOW_CONTROL_ERROR",
  "SETTINGS_TIMEOUT",
  "STREAM_CLOSED",
  "FRAME_SIZE_ERROR",
  "REFUSED_STREAM",
  "CANCEL",
  "COMPRESSION_ERROR",
  "CONNECT_ERROR",
  "ENHANCE_YOUR_CALM",
  "INADEQUATE_SECURITY",
  "HTTP_1_1_REQUIRED",
];

/** The server reset the stream (RST_STREAM) with this HTTP/2 error code. */
export class StreamReset extends Error {
  constructor(readonly code: number) {
    super(`stream reset: ${errorCodeNames[code] ?? code}`);
  }

  /** The server's cut-off of a subscriber it considers too slow; the client resumes from its last event. */
  get slowSubscriberCutOff(): boolean {
    return this.code === http2.constants.NGHTTP2_ENHANCE_YOUR_CALM;
  }
}

/** Opens one HTTP/2 connection; resolves once the server's SETTINGS have arrived. */
export function connect(origin: string): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(origin);
    session.once("remoteSettings", () => {
      session.off("error", reject);
      // Errors of an open connection surface on its streams.
      session.on("error", () => {});
      resolve(session);
    });
    session.once("error", reject);
  });
}

function frame(message: Uint8Array): Buffer {
  const framed = Buffer.alloc(5 + message.length);
  framed.writeUInt32BE(message.length, 1);
  framed.set(message, 5);
  return framed;
}

function readVarint(bytes: Buffer, start: number): { value: bigint; end: number } {
  let value = 0n;
  let shift = 0n;
  let position = start;
  for (;;) {
    const byte = bytes[position++];
    if (byte === undefined) throw new Error("truncated varint");
    value |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return { value, end: position };
    shift += 7n;
  }
}

/**
 * The event sequence of a WatchEventsResponse, or undefined for a bookmark. Fast path: protobuf-es
 * writes fields in number order, so an event is `0a <len> 08 <sequence>`; anything else is decoded
 * in full.
 */
export function eventSequence(message: Buffer): bigint | undefined {
  if (message[0] === 0x0a) {
    const body = readVarint(message, 1).end;
    if (message[body] === 0x08) return readVarint(message, body + 1).value;
  }
  const response = fromBinary(WatchEventsResponseSchema, message);
  return response.kind.case === "event" ? response.kind.value.sequence : undefined;
}

export interface WatchHandle {
  /** Settles when the stream ends: rejects with what ended it, unless it was cancelled. */
  done: Promise<void>;
  /** Cancels the stream (RST_STREAM CANCEL). */
  cancel(): void;
}

/**
 * Opens WatchEvents from `afterSequence` with no filter, with `token` as bearer credential (none
 * when empty); calls `onEvent` with each event's sequence.
 */
export function watchEvents(session: http2.ClientHttp2Session, token: string, afterSequence: bigint, onEvent: (sequence: bigint) => void): WatchHandle {
  const stream = session.request({
    ":method": "POST",
    ":path": WATCH_EVENTS_PATH,
    "content-type": "application/grpc+proto",
    te: "trailers",
    ...(token === "" ? {} : { authorization: `Bearer ${token}` }),
  });
  stream.end(frame(toBinary(WatchEventsRequestSchema, create(WatchEventsRequestSchema, { afterSequence }))));
  let cancelled = false;
  let pending: Buffer = Buffer.alloc(0);
  let status: string | undefined;
  let message = "";
  const done = new Promise<void>((resolve, reject) => {
    stream.on("response", (headers) => {
      if (headers[":status"] !== 200) reject(new Error(`HTTP status ${headers[":status"]}`));
      // A trailers-only answer carries its status in the headers.
      if (headers["grpc-status"] !== undefined) [status, message] = [String(headers["grpc-status"]), String(headers["grpc-message"] ?? "")];
    });
    stream.on("data", (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      let offset = 0;
      while (pending.length - offset >= 5) {
        const length = pending.readUInt32BE(offset + 1);
        if (pending.length - offset < 5 + length) break;
        const sequence = eventSequence(pending.subarray(offset + 5, offset + 5 + length));
        offset += 5 + length;
        if (sequence !== undefined) onEvent(sequence);
      }
      pending = pending.subarray(offset);
    });
    stream.on("trailers", (trailers) => {
      [status, message] = [String(trailers["grpc-status"]), decodeURIComponent(String(trailers["grpc-message"] ?? ""))];
    });
    stream.on("error", () => {}); // reported by "close", with the reset code
    stream.on("close", () => {
      if (cancelled) resolve();
      else if (stream.rstCode !== undefined && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) reject(new StreamReset(stream.rstCode));
      else if (status !== undefined && status !== "0") reject(new Error(`grpc-status ${status}: ${message}`));
      else reject(new Error("the server ended the stream"));
    });
  });
  return {
    done,
    cancel() {
      cancelled = true;
      stream.close(http2.constants.NGHTTP2_CANCEL);
    },
  };
}
