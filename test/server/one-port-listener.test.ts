// The listener's idle timeout against what must outlive it: an HTTP CONNECT tunnel (the egress
// proxy's) is busy for as long as it is open, however quiet. Real sockets; a stub proxy that
// echoes what it is sent. And what HTTP/2 writes in one go reaches the TCP socket in one go.
import * as http2 from "node:http2";
import * as net from "node:net";
import { Writable } from "node:stream";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createLogger } from "../../src/api/logger.js";
import { listenOnePort, type OnePortListener } from "../../src/server/one-port-listener.js";

const IDLE_MS = 300;
const CHUNKS = 400;

let listener: OnePortListener;
beforeAll(async () => {
  listener = await listenOnePort(
    (req, res) => {
      if (req.url !== "/many") return void res.end();
      // Many small writes in one turn of the event loop, as the event hub's fan-out makes them.
      for (let i = 0; i < CHUNKS; i += 1) (res as http2.Http2ServerResponse).write(`chunk ${i};`);
      res.end();
    },
    {
      host: "127.0.0.1",
      port: 0,
      prefaceTimeoutMs: 10_000,
      limits: { maxConnections: 10, maxConnectionsPerAddress: 10, idleTimeoutMs: IDLE_MS },
      log: createLogger("fatal", new Writable({ write: (_chunk, _encoding, callback) => callback() })),
      proxy: {
        connect(_request, socket) {
          socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
          socket.pipe(socket);
        },
        plainRequest: (res) => res.end(),
      },
    },
  );
});
afterAll(() => listener.close(100));

function nextData(socket: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    socket.once("data", (chunk: Buffer) => resolve(chunk.toString("latin1")));
    socket.once("close", () => reject(new Error("the server closed the tunnel")));
  });
}

it("a quiet CONNECT tunnel outlives the idle timeout", async () => {
  const socket = net.connect(listener.address().port, "127.0.0.1");
  try {
    await new Promise((resolve) => socket.once("connect", resolve));
    const established = nextData(socket);
    socket.write("CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n");
    expect(await established).toMatch(/^HTTP\/1\.1 200 /);
    await new Promise((resolve) => setTimeout(resolve, IDLE_MS * 4));
    const echoed = nextData(socket);
    socket.write("still here");
    expect(await echoed).toBe("still here");
  } finally {
    socket.destroy();
  }
});

it("an HTTP/2 session's frames of one flush reach the TCP socket as a few writes, not one each", async () => {
  // The server's writes to its TCP sockets, counted (client and server share this process; the
  // client's http2 session writes to its socket's native handle, not through these).
  const writes = { count: 0 };
  const { _write, _writev } = net.Socket.prototype as unknown as Record<"_write" | "_writev", (...args: unknown[]) => void>;
  const counting = (original: (...args: unknown[]) => void) =>
    function (this: net.Socket, ...args: unknown[]) {
      writes.count += 1;
      return original.apply(this, args);
    };
  Object.assign(net.Socket.prototype, { _write: counting(_write), _writev: counting(_writev) });
  const session = http2.connect(`http://127.0.0.1:${listener.address().port}`);
  try {
    await new Promise((resolve) => session.once("remoteSettings", resolve));
    writes.count = 0;
    const stream = session.request({ ":path": "/many" });
    stream.end();
    let body = "";
    stream.setEncoding("latin1");
    stream.on("data", (chunk: string) => (body += chunk));
    await new Promise((resolve) => stream.once("end", resolve));
    expect(body).toBe(Array.from({ length: CHUNKS }, (_, i) => `chunk ${i};`).join(""));
    expect(writes.count).toBeLessThan(CHUNKS / 10);
  } finally {
    Object.assign(net.Socket.prototype, { _write, _writev });
    session.close();
  }
});
