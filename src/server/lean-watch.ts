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
import { frameSinkKey } from "../call/frame-sink.js";
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

/** The frame an event response shares with every stream (src/services/encoded-events.ts), when connect would send it as is. */
function sharedFrame(message: object, writeMaxBytes: number, compressFrom: number | undefined): Uint8Array | undefined {
  const frame = sharedEventFrame(message);
  return frame !== undefined && sentAsIs(frame, writeMaxBytes, compressFrom) ? frame : undefined;
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
function releasedWhenRead<T>(input: AsyncIterable<T>): AsyncIterable<T> {
  let source: AsyncIterator<T> | undefined = input[Symbol.asyncIterator]();
  const ended: IteratorReturnResult<undefined> = { done: true, value: undefined };
  const iterator: AsyncIterator<T> = {
    async next() {
      if (source === undefined) return ended;
      try {
        const result = await source.next();
        if (result.done === true) source = undefined;
        return result;
      } catch (error) {
        source = undefined;
        throw error;
      }
    },
    async return() {
      const reading = source;
      source = undefined;
      await reading?.return?.();
      return ended;
    },
  };
  return { [Symbol.asyncIterator]: () => iterator };
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
    const output = transformInvokeImplementation(spec, context, opt.interceptors)(releasedWhenRead(input))[Symbol.asyncIterator]();
    return { context, output, binary: type.binary, compression: compression.response };
  };

  return async (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): Promise<void> => {
    const { context, output, binary, compression } = start(req, res);
    const serializer = serialization.getO(binary);
    /** A message's frame as connect makes it: serialized (within the size limit), compressed when negotiated, enveloped. */
    const framed = async (message: Parameters<typeof serializer.serialize>[0]): Promise<Uint8Array> => {
      const data = serializer.serialize(message);
      const envelope = compression ? await envelopeCompress({ flags: 0, data }, compression, opt.compressMinBytes) : { flags: 0, data };
      return encodeEnvelope(envelope.flags, envelope.data);
    };
    const writeHead = (): void => {
      if (!res.headersSent) res.writeHead(200, nodeHeaders(context.responseHeader));
    };
    const compressFrom = compression ? opt.compressMinBytes : undefined;
    if (binary) {
      // Live events' shared frames, written by the event hub while the call's generators sleep
      // (src/lifecycle/subscription.ts): the bytes this loop would write for them.
      context.values.set(frameSinkKey, {
        write(frames) {
          if (res.stream.closed || !frames.every((frame) => sentAsIs(frame, opt.writeMaxBytes, compressFrom))) return false;
          writeHead();
          res.write(joinedFrames(frames));
          return true;
        },
        writable: () => !res.stream.closed && res.stream.writableLength < DIRECT_WRITE_BYTES,
        backedUp: () => !res.stream.closed && res.stream.writableNeedDrain,
        drained: () => (res.stream.closed || !res.stream.writableNeedDrain ? Promise.resolve() : writable(res)),
      });
    }
    try {
      for (let next = await output.next(); next.done !== true; next = await output.next()) {
        const frame = (binary && sharedFrame(next.value, opt.writeMaxBytes, compressFrom)) || (await framed(next.value));
        if (res.stream.closed) break;
        writeHead();
        if (!res.write(frame)) await writable(res);
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
    if (res.stream.closed) return;
    writeHead();
    res.addTrailers(nodeHeaders(context.responseTrailer));
    res.end();
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
