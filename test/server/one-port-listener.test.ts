// The listener's idle timeout against what must outlive it: an HTTP CONNECT tunnel (the egress
// proxy's) is busy for as long as it is open, however quiet. Real sockets; a stub proxy that
// echoes what it is sent.
import * as net from "node:net";
import { Writable } from "node:stream";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createLogger } from "../../src/api/logger.js";
import { listenOnePort, type OnePortListener } from "../../src/server/one-port-listener.js";

const IDLE_MS = 300;

let listener: OnePortListener;
beforeAll(async () => {
  listener = await listenOnePort((_req, res) => res.end(), {
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
  });
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
