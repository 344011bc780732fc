// A lean serving path for the watch RPCs (WatchEvents, WatchOperation, WatchAuditRecords) over
// gRPC on HTTP/2, in front of the connect router. A watch stream lives for hours and carries one
// small message per event, so what connect-node spends per message and per open call — its
// response pipeline of async generators (serialize → compress → join → catch → node write,
// each message awaiting its own write promise) — is what fan-out to thousands of subscribers
// pays for. This path keeps everything that decides what a call means from connect itself and
// from the server's one list of interceptors, and replaces only that output pipeline with a loop
// that writes each framed message straight to the HTTP/2 stream:
//
// - the request: connect's own content-type, timeout and compression negotiation, envelope
//   splitting, decompression, size limit and parsing (protocol-grpc, protocol);
// - the call: connect's createHandlerContext and transformInvokeImplementation with the same
//   interceptors (metrics, trace, errors, logging, audit, authentication, validation) and the
//   same service implementations as the router, so every rule has one implementation;
// - the response: each message serialized by connect's serializer (with the same size limit),
//   compressed by connect's envelopeCompress when negotiated, framed by encodeEnvelope, and the
//   status (with google.rpc details) put in the trailers by connect's setTrailerStatus. An event
//   response in binary that goes out uncompressed — no compression was negotiated, or it is
//   under compressMinBytes, which connect never compresses — is one frame made once per event
//   and written to every stream that sends it (src/services/encoded-events.ts): the same bytes,
//   built once. Such a call gets a FrameSink (src/call/frame-sink.ts) through which the event hub writes
//   live events' frames straight to the stream while the call's generators sleep.
//
// gRPC-Web and the Connect protocol, and gRPC over HTTP/1.1, go through the router as before.
// test/e2e/lean-watch.test.ts checks that both paths answer byte for byte the same.
import type * as http from "node:http";
import type * as http2 from "node:http2";
import { Code, ConnectError, createHandlerContext, createMethodImplSpec, type ContextValues, type Interceptor } from "@connectrpc/connect";
import {
  assertByteStreamRequest,
  type Compression,
  compressionNegotiate,
  createMethodSerializationLookup,
  encodeEnvelope,
  envelopeCompress,
  pipe,
  transformDecompressEnvelope,
  transformInvokeImplementation,
  transformParseEnvelope,
  transformPrepend,
  transformSplitEnvelope,
  validateUniversalHandlerOptions,
  type UniversalHandlerOptions,
} from "@connectrpc/connect/protocol";
import {
  contentTypeJson,
  contentTypeProto,
  grpcStatusOk,
  headerAcceptEncoding,
  headerContentType,
  headerEncoding,
  headerGrpcStatus,
  headerTimeout,
  parseContentType,
  parseTimeout,
  setTrailerStatus,
} from "@connectrpc/connect/protocol-grpc";
import { compressionBrotli, compressionGzip, universalRequestFromNodeRequest } from "@connectrpc/connect-node";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { AuditService } from "../gen/agentmachine/v1/audit_service_pb.js";
import { OperationService } from "../gen/agentmachine/v1/operation_service_pb.js";
import { sharedFrame as sharedEventFrame } from "../services/encoded-events.js";
import { type FrameSink, frameSinkKey } from "../call/frame-sink.js";
import { joinedFrames } from "./joined-frames.js";

/**
 * Whether `frame` (enveloped) is what connect would send for its message: within the size limit
 * (else connect's serializer refuses it, as any message), and uncompressed — `compressFrom` is
 * the size from which connect compresses a message (envelopeCompress), or undefined when no
 * compression was negotiated.
 */
function sentAsIs(frame: Uint8Array, writeMaxBytes: number, compressFrom: number | undefined): boolean {
  const size = frame.byteLength - 5;
  return size <= writeMaxBytes && (compressFrom === undefined || size < compressFrom);
}

/**
 * Bytes a stream may hold unsent before the hub stops writing live events to it directly (then
 * its subscription sends them once the stream drains, and cuts off a client that stopped
 * reading). Above the stream's high-water mark (16 KiB), so that a burst of events goes to a
 * client that is reading as fast as its share of the machine allows without falling back; about
 * what the event hub's tail buffer holds of a subscriber (1,024 events). The frames are shared.
 */
const DIRECT_WRITE_BYTES = 128 * 1024;

type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

/** The RPCs served here: long-lived server streams of small messages. */
const WATCH_METHODS: readonly DescMethod[] = [
  OperationService.method.watchEvents,
  OperationService.method.watchOperation,
  AuditService.method.watchAuditRecords,
];

export interface LeanWatchOptions {
  /** The implementation of each service, the same objects the router serves. */
  implementations: ReadonlyMap<DescService, object>;
  /** The router's interceptors and limits, exactly as given to connectNodeAdapter. */
  interceptors: Interceptor[];
  readMaxBytes: number;
  jsonOptions: UniversalHandlerOptions["jsonOptions"];
  shutdownSignal: AbortSignal;
  contextValues: (req: http.IncomingMessage | http2.Http2ServerRequest) => ContextValues;
  /** Read per call: false sends every call to the router (so a test compares both on one server). */
  enabled: () => boolean;
}

/** connect-node's headers → node's, as connect-node writes them (lowercase keys, repeated values as lists). */
function nodeHeaders(headers: Headers): http2.OutgoingHttpHeaders {
  const out: Record<string, string | string[]> = Object.create(null);
  headers.forEach((value, key) => {
    const existing = out[key];
    out[key] = existing === undefined ? value : Array.isArray(existing) ? [...existing, value] : [existing, value];
  });
  return out;
}

/** Resolves when the response can take more bytes, or when its stream closed (then it never will). */
function writable(res: http2.Http2ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off("drain", done);
      res.stream.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.stream.on("close", done);
  });
}

/**
 * `input`, let go of once it has ended: a watch call reads its one request message at its start
 * and then streams for hours, while everything that reads the body (connect's pipeline of
 * generators over the HTTP/2 stream) would otherwise stay reachable from the call's input.
 */
class ReleasedWhenRead<T> implements AsyncIterator<T>, AsyncIterable<T> {
  private source: AsyncIterator<T> | undefined;

  constructor(input: AsyncIterable<T>) {
    this.source = input[Symbol.asyncIterator]();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return this;
  }

  async next(): Promise<IteratorResult<T>> {
    if (this.source === undefined) return { done: true, value: undefined };
    try {
      const result = await this.source.next();
      if (result.done === true) this.source = undefined;
      return result;
    } catch (error) {
      this.source = undefined;
      throw error;
    }
  }

  async return(): Promise<IteratorResult<T>> {
    const reading = this.source;
    this.source = undefined;
    await reading?.return?.();
    return { done: true, value: undefined };
  }
}

/**
 * One call's response: its stream, written by the call's loop and (as the call's FrameSink) by
 * the event hub. A class, not closures made per call: a watch stream holds it for hours (see
 * src/lifecycle/subscription.ts's Subscriber for what a closure per call costs).
 */
class LeanResponse implements FrameSink {
  constructor(
    private readonly res: http2.Http2ServerResponse,
    private readonly responseHeader: Headers,
    private readonly writeMaxBytes: number,
    /** The size from which connect compresses a message, or undefined when no compression was negotiated. */
    private readonly compressFrom: number | undefined,
  ) {}

  get closed(): boolean {
    return this.res.stream.closed;
  }

  writeHead(): void {
    if (!this.res.headersSent) this.res.writeHead(200, nodeHeaders(this.responseHeader));
  }

  /** The frame an event response shares with every stream, when connect would send it as is. */
  sharedFrame(message: object): Uint8Array | undefined {
    const frame = sharedEventFrame(message);
    return frame !== undefined && sentAsIs(frame, this.writeMaxBytes, this.compressFrom) ? frame : undefined;
  }

  /** Writes a frame the call's loop made; resolves once the stream can take more. */
  async send(frame: Uint8Array): Promise<void> {
    this.writeHead();
    if (!this.res.write(frame)) await writable(this.res);
  }

  // Live events' shared frames, written by the event hub while the call's generators sleep
  // (src/lifecycle/subscription.ts): the bytes the call's loop would write for them.
  write(frames: readonly Uint8Array[]): boolean {
    const { res } = this;
    if (res.stream.closed || !frames.every((frame) => sentAsIs(frame, this.writeMaxBytes, this.compressFrom))) return false;
    this.writeHead();
    res.write(joinedFrames(frames));
    return true;
  }

  writable(): boolean {
    return !this.res.stream.closed && this.res.stream.writableLength < DIRECT_WRITE_BYTES;
  }

  backedUp(): boolean {
    return !this.res.stream.closed && this.res.stream.writableNeedDrain;
  }

  drained(): Promise<void> {
    return this.res.stream.closed || !this.res.stream.writableNeedDrain ? Promise.resolve() : writable(this.res);
  }

  end(trailer: Headers): void {
    if (this.res.stream.closed) return;
    this.writeHead();
    this.res.addTrailers(nodeHeaders(trailer));
    this.res.end();
  }
}

/** The call handler of one watch method. */
function leanMethodHandler(method: DescMethod, impl: object, options: LeanWatchOptions) {
  const opt = validateUniversalHandlerOptions({
    // connect-node's defaults, as connectNodeAdapter sets them.
    acceptCompression: [compressionGzip, compressionBrotli],
    interceptors: options.interceptors,
    readMaxBytes: options.readMaxBytes,
    jsonOptions: options.jsonOptions,
    shutdownSignal: options.shutdownSignal,
  });
  const serialization = createMethodSerializationLookup(method, opt.binaryOptions, opt.jsonOptions, opt);
  const implementation = (impl as Record<string, (...args: unknown[]) => unknown>)[method.localName]!.bind(impl);
  const spec = createMethodImplSpec(method, implementation as never);

  /**
   * The call started: its context and output, as connect makes them. A function of its own so
   * that nothing of the request's reading (which ends with its one message) outlives it in the
   * frame of a call that streams for hours.
   */
  const start = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    const uReq = universalRequestFromNodeRequest(req, res, undefined, options.contextValues(req));
    assertByteStreamRequest(uReq);
    const type = parseContentType(uReq.header.get(headerContentType))!;
    const timeout = parseTimeout(uReq.header.get(headerTimeout), opt.maxTimeoutMs);
    const context = createHandlerContext({
      ...spec,
      service: method.parent,
      requestMethod: uReq.method,
      protocolName: "grpc",
      timeoutMs: timeout.timeoutMs,
      shutdownSignal: opt.shutdownSignal,
      requestSignal: uReq.signal,
      requestHeader: uReq.header,
      url: uReq.url,
      responseHeader: { [headerContentType]: type.binary ? contentTypeProto : contentTypeJson },
      responseTrailer: { [headerGrpcStatus]: grpcStatusOk },
      contextValues: uReq.contextValues,
    });
    const compression = compressionNegotiate(
      opt.acceptCompression,
      uReq.header.get(headerEncoding),
      uReq.header.get(headerAcceptEncoding),
      headerAcceptEncoding,
    );
    if (compression.response) context.responseHeader.set(headerEncoding, compression.response.name);
    const input = pipe(
      uReq.body,
      transformPrepend<Uint8Array>(() => {
        // Raised here, as connect does, so that they end the call with a trailer status.
        if (compression.error) throw compression.error;
        if (timeout.error) throw timeout.error;
        return undefined;
      }),
      transformSplitEnvelope(opt.readMaxBytes),
      transformDecompressEnvelope(compression.request, opt.readMaxBytes),
      transformParseEnvelope(serialization.getI(type.binary)),
    );
    const output = transformInvokeImplementation(spec, context, opt.interceptors)(new ReleasedWhenRead(input))[Symbol.asyncIterator]();
    return { context, output, binary: type.binary, compression: compression.response };
  };

  /** A message's frame as connect makes it: serialized (within the size limit), compressed when negotiated, enveloped. */
  async function framed(message: object, binary: boolean, compression: Compression | null): Promise<Uint8Array> {
    const data = serialization.getO(binary).serialize(message as never);
    const envelope = compression ? await envelopeCompress({ flags: 0, data }, compression, opt.compressMinBytes) : { flags: 0, data };
    return encodeEnvelope(envelope.flags, envelope.data);
  }

  return async (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): Promise<void> => {
    const { context, output, binary, compression } = start(req, res);
    const response = new LeanResponse(res, context.responseHeader, opt.writeMaxBytes, compression ? opt.compressMinBytes : undefined);
    if (binary) context.values.set(frameSinkKey, response);
    try {
      for (let next = await output.next(); next.done !== true; next = await output.next()) {
        const frame = (binary && response.sharedFrame(next.value)) || (await framed(next.value, binary, compression));
        if (response.closed) break;
        await response.send(frame);
      }
      context.abort();
    } catch (error) {
      context.abort(error);
      setTrailerStatus(
        context.responseTrailer,
        error instanceof ConnectError ? error : new ConnectError("internal error", Code.Internal, undefined, undefined, error),
      );
    } finally {
      await output.return?.().catch(() => undefined);
    }
    response.end(context.responseTrailer);
  };
}

/**
 * The server's handler with the watch RPCs over gRPC on HTTP/2 served by the lean path; every
 * other request goes to `router`.
 */
export function withLeanWatch(router: Handler, options: LeanWatchOptions): Handler {
  const handlers = new Map<string, ReturnType<typeof leanMethodHandler>>();
  for (const method of WATCH_METHODS) {
    const impl = options.implementations.get(method.parent);
    if (impl !== undefined) handlers.set(`/${method.parent.typeName}/${method.name}`, leanMethodHandler(method, impl, options));
  }
  return (req, res) => {
    const handler = handlers.get(req.url?.split("?", 2)[0] ?? "");
    const http2Request = "stream" in req;
    // Only POSTs of gRPC content types; anything else gets the router's answer, errors included.
    if (
      handler === undefined ||
      !http2Request ||
      req.method !== "POST" ||
      parseContentType(req.headers["content-type"] ?? null) === undefined ||
      !options.enabled()
    ) {
      router(req, res);
      return;
    }
    handler(req, res as http2.Http2ServerResponse).catch((reason: unknown) => {
      // As connect-node does: a call the client ended is no failure; anything else is a bug.
      if (ConnectError.from(reason).code !== Code.Aborted) console.error(`handler for rpc ${req.url} failed`, reason);
    });
  };
}
