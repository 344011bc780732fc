// Raw wire clients for robustness tests: node's http2/http/net modules with no Connect client
// in between, so a test can send exactly the broken bytes it means to. Every exchange has a
// deadline: a server that does not answer fails the test with a message saying what hung.
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { WatchEventsRequestSchema } from "../../src/gen/agentmachine/v1/operation_service_pb.js";

export const DEFAULT_TIMEOUT_MS = 5_000;

/** Request headers of a gRPC call (the te header is required by the gRPC HTTP/2 spec). */
export const GRPC_REQUEST_HEADERS: Readonly<Record<string, string>> = { "content-type": "application/grpc", te: "trailers" };

/** One HTTP response as it came off the wire. Header and trailer names are lowercase. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  trailers: Record<string, string>;
  body: Buffer;
}

export interface RawRequest {
  path: string;
  method?: string;
  headers?: Record<string, string>;
  /** Written chunk by chunk, then the request ends (unless `endStream` is false). */
  body?: Uint8Array | Uint8Array[];
  /** HTTP/2 only: false leaves the request half open, like a client that stalls mid-body. */
  endStream?: boolean;
  timeoutMs?: number;
}

function flatten(headers: http.IncomingHttpHeaders | http2.IncomingHttpHeaders | NodeJS.Dict<string | string[]>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    out[name.toLowerCase()] = Array.isArray(value) ? value.join(", ") : String(value);
  }
  return out;
}

function chunksOf(body: RawRequest["body"]): Uint8Array[] {
  if (body === undefined) return [];
  return Array.isArray(body) ? body : [body];
}

/** A gRPC length-prefixed message: flags, 4-byte big-endian length (declared, may lie), payload. */
export function envelope(payload: Uint8Array, options: { flags?: number; declaredLength?: number } = {}): Buffer {
  const out = Buffer.alloc(5 + payload.length);
  out.writeUInt8(options.flags ?? 0, 0);
  out.writeUInt32BE(options.declaredLength ?? payload.length, 1);
  out.set(payload, 5);
  return out;
}

/** Splits a body into envelopes; a trailing partial envelope is an error. */
export function decodeEnvelopes(body: Uint8Array): { flags: number; data: Buffer }[] {
  const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const out: { flags: number; data: Buffer }[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    if (bytes.length - offset < 5) throw new Error(`partial envelope header at byte ${offset}`);
    const flags = bytes.readUInt8(offset);
    const length = bytes.readUInt32BE(offset + 1);
    if (bytes.length - offset - 5 < length) throw new Error(`envelope at byte ${offset} promises ${length} bytes`);
    out.push({ flags, data: bytes.subarray(offset + 5, offset + 5 + length) });
    offset += 5 + length;
  }
  return out;
}

/** The gRPC status of a response: the trailer, or the header of a trailers-only response. */
export function grpcStatus(response: RawResponse): number | undefined {
  const value = response.trailers["grpc-status"] ?? response.headers["grpc-status"];
  return value === undefined ? undefined : Number(value);
}

/** gRPC-Web carries its trailers in the body, in a frame whose flags have bit 0x80 set. */
export function grpcWebTrailers(response: RawResponse): Record<string, string> {
  const trailers: Record<string, string> = {};
  for (const frame of decodeEnvelopes(response.body)) {
    if ((frame.flags & 0x80) === 0) continue;
    for (const line of frame.data.toString("utf8").split("\r\n")) {
      const colon = line.indexOf(":");
      if (colon > 0) trailers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
  }
  return trailers;
}

/** The gRPC-Web status: from the headers (trailers-only) or from the body's trailer frame. */
export function grpcWebStatus(response: RawResponse): number | undefined {
  const value = response.headers["grpc-status"] ?? grpcWebTrailers(response)["grpc-status"];
  return value === undefined ? undefined : Number(value);
}

/** Opens an HTTP/2 session (prior knowledge, cleartext). Session errors are kept, not thrown. */
export async function openSession(url: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(url);
  // Without a listener an "error" event would be an uncaught exception in the test process;
  // a broken session shows up as failed requests instead.
  session.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no HTTP/2 session to ${url} within ${timeoutMs} ms`)), timeoutMs);
    session.once("connect", () => {
      clearTimeout(timer);
      resolve();
    });
    session.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
  return session;
}

export function closeSession(session: http2.ClientHttp2Session): Promise<void> {
  if (session.closed || session.destroyed) return Promise.resolve();
  return new Promise((resolve) => session.close(() => resolve()));
}

export interface H2Response extends RawResponse {
  /**
   * Whether the server closed the whole stream by itself. A server that answers before it has
   * read the whole request should then reset the request half with RST_STREAM(NO_ERROR)
   * (RFC 9113 §8.1); when it does not, the stream stays open until the client resets it.
   * Always true when the whole request was sent before the response ended.
   */
  streamClosedByServer: boolean;
}

/**
 * One HTTP/2 request. Resolves once the server has ended its response (END_STREAM); like a
 * gRPC client, it then cancels the stream if the request half is still open, for example
 * because the server answered before reading the whole body. Waits up to `lingerMs` for the
 * server to close the stream by itself first. Rejects if the stream closed without a
 * response, or at the deadline.
 */
export function h2Request(session: http2.ClientHttp2Session, request: RawRequest & { lingerMs?: number }): Promise<H2Response> {
  const timeoutMs = request.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":method": request.method ?? "POST", ":path": request.path, ...request.headers });
    let status: number | undefined;
    let headers: Record<string, string> = {};
    let trailers: Record<string, string> = {};
    const chunks: Buffer[] = [];
    let streamError: Error | undefined;
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      stream.close(http2.constants.NGHTTP2_CANCEL);
      reject(new Error(`HTTP/2 ${request.path}: no complete response within ${timeoutMs} ms (status ${status ?? "none"})`));
    }, timeoutMs);
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const streamClosedByServer = stream.closed;
      if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
      if (status === undefined) {
        reject(new Error(`HTTP/2 ${request.path}: stream closed without a response (rstCode ${stream.rstCode}, ${streamError?.message ?? "no error"})`));
      } else {
        resolve({ status, headers, trailers, body: Buffer.concat(chunks), streamClosedByServer });
      }
    };
    stream.on("response", (h) => {
      status = Number(h[":status"]);
      headers = flatten(h);
    });
    stream.on("trailers", (t) => (trailers = flatten(t)));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    // Writing into a stream the server has reset is an error here, not a failed exchange.
    stream.on("error", (error) => (streamError = error));
    let linger: NodeJS.Timeout | undefined;
    stream.on("end", () => {
      // With the request fully sent, "close" follows at once; otherwise the request half is
      // still open and only a reset (the server's, or ours in finish()) will close it.
      if (!stream.writableFinished) linger = setTimeout(finish, request.lingerMs ?? 0);
    });
    stream.on("close", () => {
      clearTimeout(linger);
      finish();
    });
    for (const chunk of chunksOf(request.body)) stream.write(chunk);
    if (request.endStream !== false) stream.end();
  });
}

/**
 * One HTTP/1.1 request on a fresh connection. A server may answer before it has read the whole
 * body and then close the connection; a write error after the response has begun is ignored.
 */
export function h1Request(url: string, request: RawRequest): Promise<RawResponse> {
  const timeoutMs = request.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    let responded = false;
    const req = http.request(new URL(request.path, url), {
      method: request.method ?? "POST",
      headers: request.headers,
      agent: false,
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`HTTP/1.1 ${request.path}: no complete response within ${timeoutMs} ms`));
    }, timeoutMs);
    const fail = (error: Error): void => {
      clearTimeout(timer);
      reject(error);
    };
    req.on("error", (error) => {
      if (!responded) fail(error);
    });
    req.on("response", (res) => {
      responded = true;
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", fail);
      res.on("aborted", () => fail(new Error(`HTTP/1.1 ${request.path}: response aborted`)));
      res.on("end", () => {
        clearTimeout(timer);
        resolve({
          status: res.statusCode ?? 0,
          headers: flatten(res.headers),
          trailers: flatten(res.trailers),
          body: Buffer.concat(chunks),
        });
      });
    });
    for (const chunk of chunksOf(request.body)) req.write(chunk);
    req.end();
  });
}

export interface SocketOutcome {
  /** Everything the server wrote before the connection closed. */
  received: Buffer;
}

/**
 * Writes raw bytes on a fresh TCP connection and waits for the server to close it. With
 * `halfClose` the client ends its side after writing (as a client that gives up would);
 * otherwise the server must close on its own. Rejects if the connection is still open at the
 * deadline.
 */
export function rawExchange(port: number, chunks: Uint8Array[], options: { halfClose: boolean; timeoutMs?: number }): Promise<SocketOutcome> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const received: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      const got = Buffer.concat(received);
      reject(new Error(`server kept the connection open for ${timeoutMs} ms (it sent ${got.length} bytes: ${got.subarray(0, 64).toString("hex")})`));
    }, timeoutMs);
    socket.on("data", (chunk: Buffer) => received.push(chunk));
    // A reset (ECONNRESET) is one way for the server to close; "close" follows it.
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ received: Buffer.concat(received) });
    });
    socket.once("connect", () => {
      for (const chunk of chunks) socket.write(chunk);
      if (options.halfClose) socket.end();
    });
  });
}

/** The HTTP/2 client connection preface (RFC 9113 §3.4). */
export const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** An HTTP/2 frame: 24-bit length, type, flags, 31-bit stream id, payload. */
export function h2Frame(type: number, flags: number, streamId: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const out = Buffer.alloc(9 + payload.length);
  out.writeUIntBE(payload.length, 0, 3);
  out.writeUInt8(type, 3);
  out.writeUInt8(flags, 4);
  out.writeUInt32BE(streamId & 0x7fffffff, 5);
  out.set(payload, 9);
  return out;
}

/**
 * A HEADERS frame whose block is every header as a literal without indexing (RFC 7541 §6.2.2),
 * so a raw socket can open a stream. Names and values must be shorter than 127 bytes.
 */
export function h2HeadersFrame(streamId: number, headers: Record<string, string>, options: { endStream: boolean }): Buffer {
  const literal = (text: string): Buffer => {
    const bytes = Buffer.from(text, "latin1");
    if (bytes.length >= 127) throw new Error(`header text too long for h2HeadersFrame: ${text}`);
    return Buffer.concat([Buffer.from([bytes.length]), bytes]);
  };
  const block = Buffer.concat(Object.entries(headers).flatMap(([name, value]) => [Buffer.from([0x00]), literal(name), literal(value)]));
  const END_STREAM = 0x1;
  const END_HEADERS = 0x4;
  return h2Frame(0x1, END_HEADERS | (options.endStream ? END_STREAM : 0), streamId, block);
}

export interface H2Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

export const H2_FRAME_DATA = 0x0;
export const H2_FRAME_SETTINGS = 0x4;
export const H2_FRAME_GOAWAY = 0x7;

/** Splits bytes received on an HTTP/2 connection into frames (a trailing partial frame is dropped). */
export function parseH2Frames(bytes: Buffer): H2Frame[] {
  const frames: H2Frame[] = [];
  let offset = 0;
  while (offset + 9 <= bytes.length) {
    const length = bytes.readUIntBE(offset, 3);
    if (offset + 9 + length > bytes.length) break;
    frames.push({
      type: bytes.readUInt8(offset + 3),
      flags: bytes.readUInt8(offset + 4),
      streamId: bytes.readUInt32BE(offset + 5) & 0x7fffffff,
      payload: bytes.subarray(offset + 9, offset + 9 + length),
    });
    offset += 9 + length;
  }
  return frames;
}

/** The error code of the first GOAWAY frame among `frames`, if there is one. */
export function goAwayErrorCode(frames: H2Frame[]): number | undefined {
  const goAway = frames.find((frame) => frame.type === H2_FRAME_GOAWAY);
  return goAway === undefined || goAway.payload.length < 8 ? undefined : goAway.payload.readUInt32BE(4);
}

/**
 * A WatchEvents call from a client with a 1 KiB flow-control window that never reads, so the
 * server's writes block; `reset` resolves with the RST_STREAM code the server ends it with.
 */
export function stalledWatch(url: string, token: string, afterSequence = 0n): { session: http2.ClientHttp2Session; reset: Promise<number> } {
  const session = http2.connect(url, { settings: { initialWindowSize: 1024 } });
  const stalled = session.request({
    ":method": "POST",
    ":path": "/agentmachine.v1.OperationService/WatchEvents",
    ...GRPC_REQUEST_HEADERS,
    authorization: `Bearer ${token}`,
  });
  stalled.end(envelope(toBinary(WatchEventsRequestSchema, create(WatchEventsRequestSchema, { afterSequence }))));
  stalled.pause();
  stalled.on("error", () => undefined); // the reset is what is awaited, as rstCode
  const reset = new Promise<number>((resolve) => stalled.on("close", () => resolve(stalled.rstCode)));
  return { session, reset };
}
