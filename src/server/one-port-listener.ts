// One TCP port for every protocol we speak. gRPC needs HTTP/2; plain `curl` and browsers'
// gRPC-Web need HTTP/1.1; Node's cleartext http2 server with allowHTTP1 does not serve HTTP/1.1
// (that fallback only works through TLS ALPN). So a net.Server sniffs the first bytes of each
// connection: the HTTP/2 client preface goes to the http2 server, anything else to the HTTP/1.1
// server.
import { Duplex } from "node:stream";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";

const MAX_STREAMS_PER_CONNECTION = 1000;
const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

type RequestHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

/** HTTP/1.1 proxy requests on the same port (the egress proxy, src/gateways/egress-proxy.ts). */
export interface ProxyHandlers {
  connect(request: http.IncomingMessage, socket: Duplex, head: Buffer): void;
  plainRequest(res: http.ServerResponse): void;
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

/**
 * Replays the sniffed bytes ahead of the socket's data. http2 reads from the socket's native
 * handle when it gets a net.Socket, so `socket.unshift` would be lost: it must get a stream
 * that is not a net.Socket. This costs roughly 10 % of HTTP/2 throughput (bench/).
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

/**
 * Listens on `host:port`. A connection that has not sent enough bytes to tell its protocol
 * within `prefaceTimeoutMs` is closed.
 */
export async function listenOnePort(
  handler: RequestHandler,
  host: string,
  port: number,
  prefaceTimeoutMs: number,
  proxy?: ProxyHandlers,
): Promise<OnePortListener> {
  const h1 = http.createServer((req, res) => {
    // An absolute-form target ("GET http://host/…") is a request to a proxy, not to us.
    if (proxy !== undefined && /^[a-z][a-z0-9+.-]*:\/\//i.test(req.url ?? "")) proxy.plainRequest(res);
    else (handler as http.RequestListener)(req, res);
  });
  if (proxy !== undefined) h1.on("connect", proxy.connect);
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
    handler(req, res);
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  const sockets = new Set<net.Socket>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });

  // noDelay: an RPC's frames are small writes; with Nagle's algorithm each call can wait ~40 ms
  // for a delayed ACK.
  const tcp = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    // A connection that never says which protocol it speaks is dropped.
    socket.setTimeout(prefaceTimeoutMs, () => socket.destroy());
    let sniffed = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      sniffed = Buffer.concat([sniffed, chunk]);
      const verdict = looksLikeHttp2(sniffed);
      if (verdict === undefined) return;
      socket.off("data", onData);
      socket.setTimeout(0);
      socket.pause();
      if (verdict) {
        h2.emit("connection", new ReplaySocket(socket, sniffed));
      } else {
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
    tcp.listen(port, host, () => {
      tcp.off("error", reject);
      resolve();
    });
  });

  return {
    address: () => tcp.address() as net.AddressInfo,
    async close(graceMs) {
      const closed = new Promise<void>((resolve) => tcp.close(() => resolve()));
      h1.closeIdleConnections();
      for (const session of sessions) session.close();
      const deadline = setTimeout(() => {
        for (const session of sessions) session.destroy();
        h1.closeAllConnections();
        for (const socket of sockets) socket.destroy();
      }, graceMs);
      deadline.unref();
      await closed;
      clearTimeout(deadline);
    },
  };
}
