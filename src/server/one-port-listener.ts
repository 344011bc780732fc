// One TCP port for every protocol we speak. gRPC needs HTTP/2; plain `curl` and browsers'
// gRPC-Web need HTTP/1.1; Node's cleartext http2 server with allowHTTP1 does not serve HTTP/1.1
// (that fallback only works through TLS ALPN). So a net.Server sniffs the first bytes of each
// connection: the HTTP/2 client preface goes to the http2 server, anything else to the HTTP/1.1
// server. Every connection is held under the limits of connection-limits.ts (connection-table.ts).
import { Duplex } from "node:stream";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { ConnectionLimits } from "../config/connection-limits.js";
import { ConnectionTable, type HeldConnection, type LimitEvent } from "./connection-table.js";
import type { Logger } from "../api/logger.js";
import { throttled } from "./throttled.js";

const MAX_STREAMS_PER_CONNECTION = 1000;
const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** A flood repeats the same warning thousands of times a second: it is logged this often at most, with a count. */
const WARNING_INTERVAL_MS = 10_000;

/**
 * The address each HTTP/2 session's connection came from. http2 wraps a transport that is not a
 * net.Socket (a ReplaySocket) in a socket of its own that knows no address, so a request's
 * `socket.remoteAddress` is undefined there.
 */
const sessionAddresses = new WeakMap<http2.Http2Session, string>();

/** The address a request's connection came from, if known. */
export function remoteAddressOf(req: http.IncomingMessage | http2.Http2ServerRequest): string | undefined {
  const session = "stream" in req ? req.stream.session : undefined;
  return session !== undefined ? sessionAddresses.get(session) : req.socket.remoteAddress;
}

type RequestHandler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

/** HTTP/1.1 proxy requests on the same port (the egress proxy, src/gateways/egress-proxy.ts). */
export interface ProxyHandlers {
  connect(request: http.IncomingMessage, socket: Duplex, head: Buffer): void;
  plainRequest(res: http.ServerResponse): void;
}

export interface OnePortOptions {
  host: string;
  port: number;
  /** A connection that has not sent enough bytes to tell its protocol within this is closed. */
  prefaceTimeoutMs: number;
  limits: ConnectionLimits;
  log: Logger;
  proxy?: ProxyHandlers;
}

export interface OnePortListener {
  /** The bound address, once listening. */
  address(): net.AddressInfo;
  /**
   * Stops accepting connections and closes idle ones; sessions with open streams get a GOAWAY
   * and are destroyed after `graceMs`.
   */
  close(graceMs: number): Promise<void>;
}

/** Reads and drops what `stream` holds of a request body nobody reads any more. */
function dropUnread(stream: http2.ServerHttp2Stream): void {
  while (stream.read() !== null);
}

/**
 * Replays the sniffed bytes ahead of the socket's data. Given the net.Socket itself (after
 * `socket.unshift`), http2 would read its native handle, and stop reading whenever nghttp2 wants
 * no more input (after a GOAWAY for a protocol error, or once both ends sent GOAWAY while a
 * stream is still held), so it would never see the peer hang up and never close the connection
 * (test/e2e/malformed-input.test.ts, connection-limits.test.ts); this stream keeps reading. It
 * costs a hop through JavaScript per read and per write. Handing http2 the native socket, with
 * its reading restarted now and then, passes every test but did not pay (docs/event-streams.md,
 * "All five rows on a quiet machine"): less delivery CPU while submits are watched, yet a lower
 * fan-out rate and more server CPU in fan-out, in every paired run.
 */
class ReplaySocket extends Duplex {
  constructor(
    private readonly socket: net.Socket,
    first: Buffer,
  ) {
    super();
    this.push(first);
    socket.on("data", (chunk: Buffer) => {
      if (!this.push(chunk)) socket.pause();
    });
    socket.on("end", () => this.push(null));
    socket.on("error", (error) => this.destroy(error));
    socket.on("close", () => this.destroy());
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.socket.write(chunk, callback);
  }

  // What http2 writes at once (the frames of one flush of its session) goes to the socket as
  // one write, not chunk by chunk, each waiting for the one before it to complete.
  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    this.socket.cork();
    for (const [index, { chunk }] of chunks.entries()) this.socket.write(chunk, index === chunks.length - 1 ? callback : undefined);
    this.socket.uncork();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end(callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy(error ?? undefined);
    callback(error);
  }

  // http2 asks these of its transport.
  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }
  get remotePort(): number | undefined {
    return this.socket.remotePort;
  }
  setNoDelay(noDelay?: boolean): this {
    this.socket.setNoDelay(noDelay);
    return this;
  }
  setKeepAlive(enable?: boolean, delay?: number): this {
    this.socket.setKeepAlive(enable, delay);
    return this;
  }
  setTimeout(ms: number, callback?: () => void): this {
    this.socket.setTimeout(ms, callback);
    return this;
  }
}

/** Whether `bytes` is the HTTP/2 preface (true), cannot be (false), or is too short to tell (undefined). */
function looksLikeHttp2(bytes: Buffer): boolean | undefined {
  const n = Math.min(bytes.length, HTTP2_PREFACE.length);
  if (!bytes.subarray(0, n).equals(HTTP2_PREFACE.subarray(0, n))) return false;
  return n === HTTP2_PREFACE.length ? true : undefined;
}

/** Logs what the connection table did at a cap, once per interval per outcome. */
function limitWarnings(log: Logger): (event: LimitEvent) => void {
  const refused = throttled(WARNING_INTERVAL_MS, (event: LimitEvent, count: number) =>
    log.warn({ ...event, connections: count }, "connection limit reached: new connections refused (every connection held is busy)"),
  );
  const evicted = throttled(WARNING_INTERVAL_MS, (event: LimitEvent, count: number) =>
    log.warn({ ...event, connections: count }, "connection limit reached: idle connections closed to make room"),
  );
  return (event) => (event.outcome === "refused" ? refused : evicted)(event);
}

/** Listens on `options.host:options.port`. */
export async function listenOnePort(handler: RequestHandler, options: OnePortOptions): Promise<OnePortListener> {
  const { proxy, log } = options;
  const table = new ConnectionTable(options.limits, limitWarnings(log));
  const heldSockets = new WeakMap<net.Socket, HeldConnection>();
  /** HTTP/1.1: a request in flight (or a proxy tunnel, for as long as it lasts) makes its connection busy. */
  const busyWhile = (socket: net.Socket, done?: http.ServerResponse): void => {
    const held = heldSockets.get(socket);
    held?.requestStarted();
    done?.once("close", () => held?.requestEnded());
  };
  const h1 = http.createServer((req, res) => {
    busyWhile(req.socket, res);
    // An absolute-form target ("GET http://host/…") is a request to a proxy, not to us.
    if (proxy !== undefined && /^[a-z][a-z0-9+.-]*:\/\//i.test(req.url ?? "")) proxy.plainRequest(res);
    else (handler as http.RequestListener)(req, res);
  });
  if (proxy !== undefined) {
    h1.on("connect", (request: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      busyWhile(socket as net.Socket);
      proxy.connect(request, socket, head);
    });
  }
  // Node announces no limit on concurrent streams by default; each open stream holds tens of
  // KiB (bench/), so one connection must not be able to pin gigabytes.
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: MAX_STREAMS_PER_CONNECTION } }, (req, res) => {
    // Once the answer (trailers included) is out, a request body the client is still sending
    // will never be read: reset the stream (RFC 9113 §8.1) rather than leave it half open.
    const stream = req.stream;
    stream.once("wantTrailers", () =>
      setImmediate(() => {
        if (!stream.closed && !stream.readableEnded) stream.close(http2.constants.NGHTTP2_NO_ERROR);
      }),
    );
    // Node lets a stream go only once its request body was read to the end (or never read at
    // all): a body whose reader gave up (the request is destroyed: a message over the size limit,
    // say) would hold the stream, and keep its connection busy, until the connection ends. Once
    // the answer is written, the rest of the body is read and dropped, as node's HTTP/1.1 server
    // does with an unread body; the stream then ends once nghttp2 has closed it (after its trailers).
    stream.once("finish", () => {
      if (!stream.readableEnded) stream.on("readable", () => dropUnread(stream));
    });
    handler(req, res);
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  // The http2 server makes a connection's session, and emits "session", within its
  // "connection" listener: what was held for the connection is handed over around that emit.
  let arriving: HeldConnection | undefined;
  let arrivingFrom: string | undefined;
  h2.on("session", (session) => {
    if (arrivingFrom !== undefined) sessionAddresses.set(session, arrivingFrom);
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
    const held = arriving!;
    session.on("stream", (stream: http2.ServerHttp2Stream) => {
      held.requestStarted();
      stream.once("close", () => held.requestEnded());
    });
    held.onIdle(() => session.close());
  });

  // noDelay: an RPC's frames are small writes; with Nagle's algorithm each call can wait ~40 ms
  // for a delayed ACK.
  const tcp = net.createServer({ noDelay: true }, (socket) => {
    const held = table.admit(socket);
    if (held === undefined) return;
    // A connection that never says which protocol it speaks is dropped.
    socket.setTimeout(options.prefaceTimeoutMs, () => socket.destroy());
    let sniffed = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      sniffed = Buffer.concat([sniffed, chunk]);
      const verdict = looksLikeHttp2(sniffed);
      if (verdict === undefined) return;
      socket.off("data", onData);
      socket.setTimeout(0);
      socket.pause();
      if (verdict) {
        arriving = held;
        arrivingFrom = socket.remoteAddress;
        h2.emit("connection", new ReplaySocket(socket, sniffed));
        arriving = undefined;
        arrivingFrom = undefined;
      } else {
        heldSockets.set(socket, held);
        socket.unshift(sniffed);
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
    socket.on("error", () => socket.destroy());
  });

  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(options.port, options.host, () => {
      tcp.off("error", reject);
      resolve();
    });
  });
  // An accept can fail (out of file descriptors, when libuv cannot shed the pending connection
  // itself): the server keeps listening, but an "error" nobody listens to would end the process.
  tcp.on(
    "error",
    throttled(WARNING_INTERVAL_MS, (error: Error, count: number) => log.warn({ err: error, count }, "could not accept connections")),
  );

  return {
    address: () => tcp.address() as net.AddressInfo,
    async close(graceMs) {
      const closed = new Promise<void>((resolve) => tcp.close(() => resolve()));
      h1.closeIdleConnections();
      for (const session of sessions) session.close();
      const deadline = setTimeout(() => {
        for (const session of sessions) session.destroy();
        h1.closeAllConnections();
        table.destroyAll();
      }, graceMs);
      deadline.unref();
      await closed;
      clearTimeout(deadline);
    },
  };
}
