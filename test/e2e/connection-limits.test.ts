// Connection limits over real sockets (issue 14, finding 5: 20,000 sessions that sent only the
// preface and SETTINGS took every file descriptor, and health stopped answering). Linux routes
// all of 127.0.0.0/8 to loopback, so a client binds its socket to 127.0.0.N to come from
// another address.
import { readdirSync } from "node:fs";
import * as http2 from "node:http2";
import * as net from "node:net";
import { fromBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { DelegationService } from "../../src/gen/agentmachine/v1/delegation_service_pb.js";
import { Health, HealthCheckResponseSchema, HealthCheckResponse_ServingStatus as Status } from "../../src/gen/grpc/health/v1/health_pb.js";
import { defaultConfig, type ServerConfig } from "../../src/config/config.js";
import { clientFor } from "../helpers/clients.js";
import {
  GRPC_REQUEST_HEADERS,
  H2_FRAME_DATA,
  H2_FRAME_SETTINGS,
  HTTP2_PREFACE,
  decodeEnvelopes,
  envelope,
  goAwayErrorCode,
  grpcStatus,
  h2Frame,
  h2HeadersFrame,
  h2Request,
  parseH2Frames,
} from "../helpers/raw-http2.js";
import { startChildServer, startTestServer, type TestServer } from "../helpers/server.js";

const IDLE_MS = 400;

function limits(overrides: Partial<ServerConfig["connectionLimits"]>): Partial<ServerConfig> {
  return { connectionLimits: { ...defaultConfig.connectionLimits, ...overrides } };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Everything a test opened, closed after each test so that the next one starts from none. */
const opened: { close(): void }[] = [];
afterEach(() => {
  for (const connection of opened.splice(0)) connection.close();
});

/** A raw TCP connection: what the server sent, and when it closed. */
interface RawConnection {
  socket: net.Socket;
  received: () => Buffer;
  closed: Promise<void>;
  isClosed: () => boolean;
  close(): void;
}

function rawConnection(port: number, from: string, opening: Uint8Array[]): Promise<RawConnection> {
  const socket = net.connect({ port, host: "127.0.0.1", localAddress: from });
  const chunks: Buffer[] = [];
  let isClosed = false;
  socket.on("data", (chunk: Buffer) => chunks.push(chunk));
  socket.on("error", () => {});
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  void closed.then(() => (isClosed = true));
  const connection: RawConnection = { socket, received: () => Buffer.concat(chunks), closed, isClosed: () => isClosed, close: () => socket.destroy() };
  opened.push(connection);
  return new Promise((resolve, reject) => {
    socket.once("connect", () => {
      for (const bytes of opening) socket.write(bytes);
      resolve(connection);
    });
    socket.once("error", reject);
  });
}

/** An HTTP/2 connection that sends the preface and an empty SETTINGS frame, then nothing. */
function idleSession(port: number, from = "127.0.0.1"): Promise<RawConnection> {
  return rawConnection(port, from, [HTTP2_PREFACE, h2Frame(H2_FRAME_SETTINGS, 0, 0)]);
}

/**
 * Whether the server took the connection (it answers the preface with its SETTINGS) or refused
 * it (closed it having sent nothing).
 */
async function verdict(connection: RawConnection, timeoutMs = 3_000): Promise<"served" | "refused"> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (connection.received().length > 0) return "served";
    if (connection.isClosed()) return "refused";
    await sleep(10);
  }
  throw new Error(`the server neither answered nor closed a connection from ${connection.socket.localAddress} within ${timeoutMs} ms`);
}

/** Resolves with `promise`; rejects if it has not settled after `timeoutMs`. */
async function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => (timer = setTimeout(() => reject(new Error(`${what} after ${timeoutMs} ms`)), timeoutMs)));
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

function closedWithin(connection: RawConnection, timeoutMs: number): Promise<void> {
  return within(connection.closed, timeoutMs, "connection still open");
}

function sessionFrom(url: string, from: string): http2.ClientHttp2Session {
  const { port } = new URL(url);
  const session = http2.connect(url, { createConnection: () => net.connect({ port: Number(port), host: "127.0.0.1", localAddress: from }) });
  session.on("error", () => {});
  opened.push({ close: () => session.destroy() });
  return session;
}

/** An HTTP/2 session from `from` with an open grpc.health.v1.Health/Watch stream: a busy connection. */
async function watchingSession(
  url: string,
  from: string,
): Promise<{ session: http2.ClientHttp2Session; stream: http2.ClientHttp2Stream; messages: () => number }> {
  const session = sessionFrom(url, from);
  const stream = session.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Watch", ...GRPC_REQUEST_HEADERS });
  stream.on("error", () => {});
  let messages = 0;
  stream.on("data", () => (messages += 1));
  stream.end(envelope(new Uint8Array(0)));
  await new Promise<void>((resolve, reject) => {
    stream.once("data", () => resolve());
    stream.once("close", () => reject(new Error(`the watch from ${from} closed before its first message`)));
  });
  return { session, stream, messages: () => messages };
}

/** grpc.health.v1.Health/Check from `from`, on a connection of its own. */
async function healthFrom(url: string, from: string): Promise<Status | undefined> {
  const session = sessionFrom(url, from);
  try {
    const response = await h2Request(session, { path: "/grpc.health.v1.Health/Check", headers: GRPC_REQUEST_HEADERS, body: envelope(new Uint8Array(0)) });
    expect(grpcStatus(response)).toBe(0);
    return fromBinary(HealthCheckResponseSchema, decodeEnvelopes(response.body)[0]!.data).status;
  } finally {
    session.destroy();
  }
}

describe("idle connections are closed; busy ones are not", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer(limits({ idleTimeoutMs: IDLE_MS }));
  });
  afterAll(() => server.close());

  it("an HTTP/2 session that sent only its preface and SETTINGS gets a GOAWAY and is closed after the idle timeout", async () => {
    const started = Date.now();
    const idle = await idleSession(server.port);
    await closedWithin(idle, 5_000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(IDLE_MS - 50);
    expect(goAwayErrorCode(parseH2Frames(idle.received()))).toBe(http2.constants.NGHTTP2_NO_ERROR);
  });

  it("a session with an open watch stream outlives the idle timeout, and is closed once the stream has ended and the session stayed idle", async () => {
    const watching = await watchingSession(server.url, "127.0.0.1");
    await sleep(IDLE_MS * 4);
    expect(watching.session.closed || watching.session.destroyed).toBe(false);
    const service = "agentmachine.v1.ContractService";
    server.health.set(service, Status.NOT_SERVING);
    server.health.set(service, Status.SERVING);
    await expect.poll(() => watching.messages(), { timeout: 2_000 }).toBeGreaterThanOrEqual(1);
    const goaway = new Promise<void>((resolve) => watching.session.once("goaway", () => resolve()));
    watching.stream.close(http2.constants.NGHTTP2_CANCEL);
    const ended = Date.now();
    await within(goaway, 5_000, "no GOAWAY");
    expect(Date.now() - ended).toBeGreaterThanOrEqual(IDLE_MS - 50);
  });

  it("a session with an open watch stream that breaks the protocol and then hangs up is closed by the server", async () => {
    const watch = await rawConnection(server.port, "127.0.0.1", [
      HTTP2_PREFACE,
      h2Frame(H2_FRAME_SETTINGS, 0, 0),
      h2HeadersFrame(
        1,
        { ":method": "POST", ":scheme": "http", ":path": "/grpc.health.v1.Health/Watch", ":authority": "localhost", ...GRPC_REQUEST_HEADERS },
        { endStream: false },
      ),
      h2Frame(H2_FRAME_DATA, 0x1, 1, envelope(new Uint8Array(0))),
    ]);
    await expect
      .poll(() => parseH2Frames(watch.received()).some((frame) => frame.type === H2_FRAME_DATA && frame.streamId === 1), { timeout: 3_000 })
      .toBe(true);
    // DATA on a stream never opened: a connection error, answered with GOAWAY(PROTOCOL_ERROR).
    watch.socket.end(h2Frame(H2_FRAME_DATA, 0x1, 99, Buffer.from("hi")));
    await closedWithin(watch, 5_000);
    expect(goAwayErrorCode(parseH2Frames(watch.received()))).toBe(http2.constants.NGHTTP2_PROTOCOL_ERROR);
  });

  // Node lets a server stream go only once its request body was read to the end; a handler that
  // read part of the body and answered (connect destroys the request when a message is over the
  // size limit) would leave the stream open, and its connection busy and never closed as idle, for
  // as long as the connection lasts: the listener reads and drops the rest once the answer is out.
  it("a session whose request body was answered before it was read to its end goes idle, and is closed after the idle timeout", async () => {
    const session = sessionFrom(server.url, "127.0.0.1");
    let goaway = false;
    session.once("goaway", () => (goaway = true));
    // The whole body fits the stream's window, so it arrives in full; the server reads its
    // first part, finds a message longer than any it takes, and answers at once.
    const response = await h2Request(session, {
      path: "/grpc.health.v1.Health/Check",
      headers: GRPC_REQUEST_HEADERS,
      body: envelope(Buffer.alloc(60_000), { declaredLength: 0xfffffff0 }),
      lingerMs: 1_000,
    });
    expect(grpcStatus(response)).toBe(8); // RESOURCE_EXHAUSTED
    await expect.poll(() => goaway, { timeout: IDLE_MS * 10 }).toBe(true);
  });

  it("a watch over HTTP/1.1 (Connect streaming) outlives the idle timeout", async () => {
    const health = createClient(Health, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));
    const abort = new AbortController();
    const service = "agentmachine.v1.PolicyService";
    const seen: Status[] = [];
    try {
      for await (const { status } of health.watch({ service }, { signal: abort.signal })) {
        seen.push(status);
        if (seen.length === 1) {
          await sleep(IDLE_MS * 4);
          server.health.set(service, Status.NOT_SERVING);
        }
        if (seen.length === 2) break;
      }
    } finally {
      abort.abort();
      server.health.set(service, Status.SERVING);
    }
    expect(seen).toEqual([Status.SERVING, Status.NOT_SERVING]);
  });

  it("an HTTP/1.1 connection that never finishes its request head (slowloris) is closed after the idle timeout", async () => {
    const slow = await rawConnection(server.port, "127.0.0.1", [Buffer.from("POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\n")]);
    const drip = setInterval(() => slow.socket.write("X-Slow: 1\r\n"), 100);
    try {
      await closedWithin(slow, 5_000);
    } finally {
      clearInterval(drip);
    }
  });
});

describe("the per-address cap", () => {
  const PER_ADDRESS = 10;
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer(limits({ maxConnections: 100, maxConnectionsPerAddress: PER_ADDRESS }));
  });
  afterAll(() => server.close());

  it("refuses a connection beyond the cap at once while other addresses get health answers, and logs one warning for many refusals", async () => {
    const busy = [];
    for (let i = 0; i < PER_ADDRESS; i++) busy.push(await watchingSession(server.url, "127.0.0.2"));
    for (let i = 0; i < 5; i++) expect(await verdict(await idleSession(server.port, "127.0.0.2"))).toBe("refused");
    expect(await healthFrom(server.url, "127.0.0.1")).toBe(Status.SERVING);
    expect(await healthFrom(server.url, "127.0.0.3")).toBe(Status.SERVING);
    const warnings = server.logs.filter((line) => line.level === "warn" && /connection limit/.test(String(line.msg)));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ address: "127.0.0.2", limit: "per-address" });

    // A slot that frees is a slot again.
    busy[0]!.session.destroy();
    await expect.poll(async () => verdict(await idleSession(server.port, "127.0.0.2")), { timeout: 3_000 }).toBe("served");
  });

  it("at the cap, an idle connection of that address makes room for a new one: one that never carried a request first, else the one idle the longest", async () => {
    const used = sessionFrom(server.url, "127.0.0.4");
    const ask = async (): Promise<number | undefined> =>
      grpcStatus(await h2Request(used, { path: "/grpc.health.v1.Health/Check", headers: GRPC_REQUEST_HEADERS, body: envelope(new Uint8Array(0)) }));
    expect(await ask()).toBe(0);
    const silent = [];
    for (let i = 1; i < PER_ADDRESS; i++) {
      silent.push(await idleSession(server.port, "127.0.0.4"));
      expect(await verdict(silent.at(-1)!)).toBe("served");
    }
    expect(await healthFrom(server.url, "127.0.0.4")).toBe(Status.SERVING);
    await closedWithin(silent[0]!, 2_000);
    expect(silent.slice(1).filter((connection) => connection.isClosed())).toEqual([]);
    expect(await ask()).toBe(0);
  });
});

describe("the total cap", () => {
  const TOTAL = 12;
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer(limits({ maxConnections: TOTAL, maxConnectionsPerAddress: 4 }));
  });
  afterAll(() => server.close());

  it("refuses a connection from any address when every slot is busy, and takes one again when a slot frees", async () => {
    const busy = [];
    for (let i = 0; i < TOTAL; i++) busy.push(await watchingSession(server.url, `127.0.0.${10 + Math.floor(i / 4)}`));
    expect(await verdict(await idleSession(server.port, "127.0.0.20"))).toBe("refused");
    expect(await verdict(await idleSession(server.port, "127.0.0.1"))).toBe("refused");
    busy[0]!.session.destroy();
    await expect.poll(async () => verdict(await idleSession(server.port, "127.0.0.20")), { timeout: 3_000 }).toBe("served");
  });

  it("when the server is full of idle connections, the one idle the longest makes room, whatever its address", async () => {
    const idle = [];
    for (let i = 0; i < TOTAL; i++) {
      idle.push(await idleSession(server.port, `127.0.0.${30 + Math.floor(i / 4)}`));
      expect(await verdict(idle[i]!)).toBe("served");
    }
    expect(await healthFrom(server.url, "127.0.0.1")).toBe(Status.SERVING);
    await closedWithin(idle[0]!, 2_000);
    expect(idle.slice(1).filter((connection) => connection.isClosed())).toEqual([]);
  });
});

describe("a flood of idle sessions", () => {
  it("3,000 sessions from 13 addresses, reopened as soon as they are closed, do not take a server with 1,024 file descriptors down: health and WhoAmI keep answering", async () => {
    // The default caps come from the process's open-file limit; the machine's is far more than
    // a test can open, so the server runs under a small one.
    const server = await startChildServer([], { openFileLimit: 1024 });
    const port = Number(new URL(server.url).port);
    let flooding = true;
    let floodConnections = 0;
    const keepOpen = async (from: string): Promise<void> => {
      while (flooding) {
        floodConnections += 1;
        await idleSession(port, from).then(
          (connection) => connection.closed,
          () => sleep(10),
        );
      }
    };
    const flood = Array.from({ length: 3_000 }, (_, i) => keepOpen(`127.0.0.${1 + (i % 13)}`));
    try {
      await expect.poll(() => floodConnections, { timeout: 30_000 }).toBeGreaterThan(6_000);
      const delegations = clientFor(DelegationService, server.url, { protocol: "connect" });
      for (let i = 0; i < 5; i++) {
        expect(await healthFrom(server.url, "127.0.0.1")).toBe(Status.SERVING);
        expect((await delegations.whoAmI({})).delegation?.name).toMatch(/^delegations\//);
      }
      const serving = /"connectionLimits":(\{[^}]*\})/.exec(server.stderr());
      const { maxConnections } = JSON.parse(serving![1]!) as { maxConnections: number };
      expect(maxConnections).toBe(768);
      expect(readdirSync(`/proc/${server.child.pid}/fd`).length).toBeLessThan(maxConnections + 64);
      expect(server.stderr()).toMatch(/idle connections closed to make room/);
    } finally {
      flooding = false;
      server.child.kill("SIGKILL");
      await server.exited;
      await Promise.all(flood);
    }
  });
});
