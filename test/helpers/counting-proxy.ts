// A TCP relay in front of the server that counts the bytes each way, so a test can see on the
// wire what a client really sent and got (for example, that gzip shrank a message).
import * as net from "node:net";

export interface CountingProxy {
  /** `http://127.0.0.1:PORT`, for connect-es transports. */
  url: string;
  /** `127.0.0.1:PORT`, for grpc-js. */
  address: string;
  /** Bytes relayed so far: client → server (`sent`) and server → client (`received`). */
  bytes(): { sent: number; received: number };
  /** Destroys every relayed connection and goes on listening (a network blip, for a client's reconnect). */
  cut(): void;
  /** Stops listening and destroys every relayed connection. */
  close(): Promise<void>;
}

export async function startCountingProxy(targetPort: number, targetHost = "127.0.0.1"): Promise<CountingProxy> {
  let sent = 0;
  let received = 0;
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket): void => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  };

  const relay = net.createServer((client) => {
    const upstream = net.connect(targetPort, targetHost);
    track(client);
    track(upstream);
    const destroyBoth = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", destroyBoth);
    upstream.on("error", destroyBoth);
    client.on("data", (chunk: Buffer) => (sent += chunk.length));
    upstream.on("data", (chunk: Buffer) => (received += chunk.length));
    client.pipe(upstream);
    upstream.pipe(client);
  });

  await new Promise<void>((resolve, reject) => {
    relay.once("error", reject);
    relay.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = relay.address() as net.AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    address: `127.0.0.1:${port}`,
    bytes: () => ({ sent, received }),
    cut: () => {
      for (const socket of sockets) socket.destroy();
    },
    close: () =>
      new Promise<void>((resolve) => {
        relay.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}
