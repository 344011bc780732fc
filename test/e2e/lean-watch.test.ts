// The lean serving path of the watch RPCs (src/server/lean-watch.ts) answers byte for byte what
// connect-node's handler answers: for each request below, one server answers it once by the lean
// path and once by the router (config.leanWatchStreams, read per call, switched between the two),
// and the status, headers (but the date), body bytes and trailers must be equal — over gRPC
// binary and JSON, identity and gzip, for streams that end by themselves, by their deadline, and
// with errors carrying google.rpc details (validation, authentication, not found, bad timeout,
// unsupported compression, a message over the size limit). Ordering, exact filters and
// resumability through the lean path are what test/e2e/event-streams.test.ts checks: its gRPC
// watchers are served by it.
import { gzipSync } from "node:zlib";
import type * as http2 from "node:http2";
import { create, type DescMessage, type MessageInitShape, toBinary, toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WatchAuditRecordsRequestSchema } from "../../src/gen/agentmachine/v1/audit_service_pb.js";
import { OperationService, WatchEventsRequestSchema, WatchOperationRequestSchema } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { ProfileType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { closeSession, decodeEnvelopes, envelope, h2Request, openSession, type H2Response } from "../helpers/raw-http2.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { authInterceptors } from "../helpers/tokens.js";
import { agentOperationTypes, clientsFor, roomyBudget, wideRoot } from "../helpers/runtime.js";

const MAX_MESSAGE_BYTES = 64 * 1024;

let server: TestServer;
let session: http2.ClientHttp2Session;
let finished: string;
let operations: ReturnType<typeof createClient<typeof OperationService>>;

interface Case {
  name: string;
  path: string;
  /** The request body's serialized message (or raw bytes). */
  message: Uint8Array;
  headers?: Record<string, string>;
  /** Send the body gzip-compressed (grpc-encoding: gzip). */
  gzip?: boolean;
  anonymous?: boolean;
}

const WATCH_EVENTS = "/agentmachine.v1.OperationService/WatchEvents";
const WATCH_OPERATION = "/agentmachine.v1.OperationService/WatchOperation";
const WATCH_AUDIT = "/agentmachine.v1.AuditService/WatchAuditRecords";

function encoded<Desc extends DescMessage>(schema: Desc, init: MessageInitShape<Desc>, json: boolean): Uint8Array {
  const message = create(schema, init);
  return json ? new TextEncoder().encode(toJsonString(schema, message)) : toBinary(schema, message);
}

let requestCounter = 0;

async function ask(request: Case): Promise<H2Response> {
  const body = request.gzip ? envelope(gzipSync(request.message), { flags: 1 }) : envelope(request.message);
  return h2Request(session, {
    path: request.path,
    timeoutMs: 15_000,
    headers: {
      "content-type": "application/grpc+proto",
      te: "trailers",
      // The same request id for both paths: the server echoes it.
      "x-request-id": `lean-${request.name.replace(/[^A-Za-z0-9]+/g, "-")}-${requestCounter}`,
      ...(request.anonymous ? {} : { authorization: `Bearer ${server.token}` }),
      ...(request.gzip ? { "grpc-encoding": "gzip" } : {}),
      ...request.headers,
    },
    body,
  });
}

/** With gzip: the client also accepts gzip responses; without, the server must not compress. */
function acceptGzip(gzip: boolean): Record<string, string> {
  return gzip ? { "grpc-accept-encoding": "gzip" } : { "grpc-accept-encoding": "identity" };
}

/** The response as compared: everything but the date header. */
function comparable(response: H2Response): object {
  const { date: _date, ...headers } = response.headers;
  return { status: response.status, headers, trailers: response.trailers, body: response.body.toString("base64") };
}

/** Answers `request` by the lean path, then by the router; returns both. */
async function bothPaths(request: Case): Promise<{ lean: H2Response; router: H2Response }> {
  requestCounter++;
  server.config.leanWatchStreams = true;
  const lean = await ask(request);
  server.config.leanWatchStreams = false;
  try {
    return { lean, router: await ask(request) };
  } finally {
    server.config.leanWatchStreams = true;
  }
}

beforeAll(async () => {
  server = await startTestServer({ bookmarkIntervalMs: 600_000, maxMessageBytes: MAX_MESSAGE_BYTES });
  const client = createClient(OperationService, createGrpcTransport({ baseUrl: server.url, interceptors: authInterceptors(server.url) }));
  operations = client;
  const { operation } = await client.submitOperation({
    requestId: "lean-profile",
    spec: { kind: { case: "profileCreate", value: { profileId: "lean", profileType: ProfileType.PERSONAL } } },
  });
  for await (const _ of client.watchOperation({ name: operation!.name }, { timeoutMs: 10_000 })) void _;
  const { operation: grant } = await client.submitOperation({
    requestId: "lean-grant",
    profile: "profiles/lean",
    labels: { lane: "lean" },
    spec: { kind: { case: "toolGrantApply", value: { tool: "git" } } },
  });
  for await (const _ of client.watchOperation({ name: grant!.name }, { timeoutMs: 10_000 })) void _;
  finished = grant!.name;
  session = await openSession(server.url);
}, 60_000);

afterAll(async () => {
  await closeSession(session);
  await server?.close();
});

describe("the lean watch path answers as connect-node does", () => {
  const codecs = [
    { codec: "proto", contentType: "application/grpc+proto" },
    { codec: "json", contentType: "application/grpc+json" },
  ] as const;

  // First, before any call is denied: audit records are appended for denials.
  for (const { codec, contentType } of codecs) {
    for (const gzip of [false, true]) {
      it(`WatchAuditRecords until its deadline, ${codec}, ${gzip ? "gzip" : "identity"}`, async () => {
        const { lean, router } = await bothPaths({
          name: `audit ${codec} ${gzip}`,
          path: WATCH_AUDIT,
          message: encoded(WatchAuditRecordsRequestSchema, { afterSequence: 0n }, codec === "json"),
          gzip,
          headers: { "content-type": contentType, "grpc-timeout": "700m", ...acceptGzip(gzip) },
        });
        expect(decodeEnvelopes(lean.body).length).toBeGreaterThan(0);
        expect(comparable(lean)).toEqual(comparable(router));
      });
    }
  }

  for (const { codec, contentType } of codecs) {
    for (const gzip of [false, true]) {
      const variant = `${codec}, ${gzip ? "gzip" : "identity"}`;
      it(`WatchOperation of a finished operation, to its end, ${variant}`, async () => {
        const { lean, router } = await bothPaths({
          name: `operation ${variant}`,
          path: WATCH_OPERATION,
          message: encoded(WatchOperationRequestSchema, { name: finished }, codec === "json"),
          gzip,
          headers: { "content-type": contentType, ...acceptGzip(gzip) },
        });
        expect(lean.trailers["grpc-status"]).toBe("0");
        expect(decodeEnvelopes(lean.body).length).toBeGreaterThan(0);
        expect(comparable(lean)).toEqual(comparable(router));
      });

      it(`WatchEvents from 0 until its deadline, unfiltered and filtered, ${variant}`, async () => {
        for (const filter of [undefined, { operations: [finished] }, { profile: "profiles/lean", labels: { lane: "lean" } }]) {
          const { lean, router } = await bothPaths({
            name: `events ${variant}`,
            path: WATCH_EVENTS,
            message: encoded(WatchEventsRequestSchema, { afterSequence: 0n, ...(filter ? { filter } : {}) }, codec === "json"),
            gzip,
            headers: { "content-type": contentType, "grpc-timeout": "600m", ...acceptGzip(gzip) },
          });
          expect(decodeEnvelopes(lean.body).length).toBeGreaterThan(0);
          expect(comparable(lean)).toEqual(comparable(router));
        }
      });
    }
  }

  // Live events of a binary stream without compression are written by the event hub straight to
  // the lean path's stream (src/call/frame-sink.ts); with gzip they pass through the call's loop.
  for (const gzip of [false, true]) {
    it(`WatchEvents of events committed while both streams are open, proto, ${gzip ? "gzip" : "identity"}`, async () => {
      let head = 0n;
      try {
        for await (const response of operations.watchEvents({ afterSequence: 0n }, { timeoutMs: 500 })) {
          if (response.kind.case === "event") head = response.kind.value.sequence;
        }
      } catch (error) {
        expect(ConnectError.from(error).code).toBe(Code.DeadlineExceeded);
      }
      const request: Case = {
        name: `live ${gzip}`,
        path: WATCH_EVENTS,
        message: encoded(WatchEventsRequestSchema, { afterSequence: head }, false),
        gzip,
        headers: { "grpc-timeout": "4000m", ...acceptGzip(gzip) },
      };
      const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
      requestCounter++;
      server.config.leanWatchStreams = true;
      const lean = ask(request);
      await pause(200);
      server.config.leanWatchStreams = false;
      const router = ask(request);
      await pause(200);
      server.config.leanWatchStreams = true;
      for (const id of ["live-a", "live-b", "live-c"]) {
        const { operation } = await operations.submitOperation({
          requestId: `${id}-${gzip}`,
          spec: { kind: { case: "profileCreate", value: { profileId: `${id}-${gzip ? "gz" : "id"}`, profileType: ProfileType.PERSONAL } } },
        });
        for await (const _ of operations.watchOperation({ name: operation!.name }, { timeoutMs: 10_000 })) void _;
      }
      const [leanResponse, routerResponse] = await Promise.all([lean, router]);
      expect(decodeEnvelopes(leanResponse.body).length).toBeGreaterThanOrEqual(6);
      expect(comparable(leanResponse)).toEqual(comparable(routerResponse));
    });
  }

  const errors: Case[] = [
    { name: "invalid filter", path: WATCH_EVENTS, message: encoded(WatchEventsRequestSchema, { filter: { profile: "not a profile" } }, false) },
    { name: "unknown operation", path: WATCH_OPERATION, message: encoded(WatchOperationRequestSchema, { name: "operations/nope" }, false) },
    { name: "no credential", path: WATCH_EVENTS, message: encoded(WatchEventsRequestSchema, {}, false), anonymous: true },
    { name: "malformed timeout", path: WATCH_EVENTS, message: encoded(WatchEventsRequestSchema, {}, false), headers: { "grpc-timeout": "soon" } },
    { name: "unsupported compression", path: WATCH_EVENTS, message: encoded(WatchEventsRequestSchema, {}, false), headers: { "grpc-encoding": "snappy" } },
    {
      name: "message over the limit",
      path: WATCH_EVENTS,
      message: encoded(WatchEventsRequestSchema, { filter: { labels: { big: "x".repeat(MAX_MESSAGE_BYTES) } } }, false),
    },
    { name: "cursor ahead of the newest event", path: WATCH_EVENTS, message: encoded(WatchEventsRequestSchema, { afterSequence: 1_000_000n }, false) },
    { name: "garbage message", path: WATCH_OPERATION, message: new Uint8Array([0xff, 0xff, 0xff]) },
  ];
  for (const request of errors) {
    it(`an error, ${request.name}: the same status, message and details in the trailers`, async () => {
      const { lean, router } = await bothPaths(request);
      expect(lean.trailers["grpc-status"]).not.toBe("0");
      expect(comparable(lean)).toEqual(comparable(router));
    });
  }
});

describe("the lean watch path applies the caller's scope and authority", () => {
  /** A child of a wide root that may see only `profiles`. */
  async function scoped(subject: string, profiles: string[]) {
    const root = await wideRoot(server.url, server.dataDir);
    const { delegation, token } = await root.delegations.issueDelegation({
      subject,
      scope: { operationTypes: agentOperationTypes, profiles, tools: ["*"], modelProviders: ["*"], budget: roomyBudget() },
    });
    return { root, delegation: delegation!, clients: clientsFor(server.url, token) };
  }

  /** Every event a WatchEvents from 0 sends before its deadline (800 ms unless given), or the error that ended it. */
  async function watchAll(clients: ReturnType<typeof clientsFor>, filter?: { profile: string }, timeoutMs = 800): Promise<string[] | ConnectError> {
    const operations: string[] = [];
    try {
      for await (const response of clients.operations.watchEvents({ afterSequence: 0n, ...(filter ? { filter } : {}) }, { timeoutMs })) {
        if (response.kind.case === "event") operations.push(response.kind.value.operation);
      }
    } catch (error) {
      const connectError = ConnectError.from(error);
      if (connectError.code !== Code.DeadlineExceeded) return connectError;
    }
    return operations;
  }

  it("a caller scoped to another profile sees none of this profile's events, and may not ask for them", async () => {
    const { clients } = await scoped("elsewhere", ["profiles/elsewhere"]);
    expect(await watchAll(clients)).toEqual([]);
    const denied = await watchAll(clients, { profile: "profiles/lean" });
    expect(denied instanceof ConnectError ? denied.code : denied).toBe(Code.PermissionDenied);
    const own = await scoped("lean-only", ["profiles/lean"]);
    expect(await watchAll(own.clients)).toContain(finished);
  });

  it("revoking the caller's delegation ends its open stream with Unauthenticated", async () => {
    const { root, delegation, clients } = await scoped("revoked-watcher", ["*"]);
    // The code the stream ends with, read to its end.
    const ended = watchAll(clients, undefined, 10_000).then((end) => (end instanceof ConnectError ? end.code : "ended without an error"));
    await new Promise((resolve) => setTimeout(resolve, 300));
    await root.delegations.revokeDelegation({ name: delegation.name, reason: "retired" });
    expect(await ended).toBe(Code.Unauthenticated);
  });
});
