// node:http2 on a native socket reads it from C++ and stops reading whenever nghttp2 wants no
// more input: once it has sent a GOAWAY for a protocol error (it never reads again, although
// RFC 9113 §5.4.1 says it must then close the connection, which node does not), or once both
// ends have sent GOAWAY while a stream is still open on the JavaScript side. The peer's hang-up
// is then never read, so the connection stays open: until the idle timeout, or for ever while a
// stream (a watch) is open on it. This restarts reading on each such socket now and then: the
// bytes still go to the session, which swallows them, and the end of the stream reaches the
// socket, which then closes itself and its session, as it does while the session reads.
import type * as net from "node:net";

/** The native stream under a net.Socket, as node's own net and http2 modules use it. */
interface StreamHandle {
  readStart(): number;
  /** Bytes of writes queued in libuv: while one is in progress, the session stops reading on purpose (backpressure) and starts again itself. */
  writeQueueSize: number;
}

export class HangUpWatch {
  private readonly sockets = new Set<net.Socket>();
  private readonly timer: NodeJS.Timeout;

  constructor(intervalMs: number) {
    this.timer = setInterval(() => this.restartReading(), intervalMs);
    this.timer.unref();
  }

  /** Watches `socket` (handed to node:http2) until it closes. */
  add(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once("close", () => this.sockets.delete(socket));
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private restartReading(): void {
    for (const socket of this.sockets) {
      const handle = (socket as unknown as { _handle: StreamHandle | null })._handle;
      // Already reading: libuv answers EALREADY and nothing changes.
      if (handle !== null && handle.writeQueueSize === 0) handle.readStart();
    }
  }
}
