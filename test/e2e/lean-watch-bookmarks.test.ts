// An idle WatchEvents stream on the lean gRPC path gets its bookmarks written to the HTTP/2
// stream directly (src/lifecycle/subscription.ts, src/services/encoded-events.ts), not through
// the call's generators; they must be what connect-node's handler sends: the same frames (flags,
// length, WatchEventsResponse{bookmark}) at the same sequence, uncompressed also where gzip was
// negotiated (connect never compresses a message under 1 KiB), each one's time its own, and the
// stream still ends at its deadline as connect-node's does.
import type * as http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OperationService, WatchEventsRequestSchema, WatchEventsResponseSchema } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { ProfileType } from "../../src/gen/agentmachine/v1/types_pb.js";
import { closeSession, decodeEnvelopes, envelope, h2Request, openSession, type H2Response } from "../helpers/raw-http2.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { authInterceptors } from "../helpers/tokens.js";

const BOOKMARK_MS = 150;

let server: TestServer;
let session: http2.ClientHttp2Session;
let head: bigint;

beforeAll(async () => {
  server = await startTestServer({ bookmarkIntervalMs: BOOKMARK_MS });
  const client = createClient(OperationService, createGrpcTransport({ baseUrl: server.url, interceptors: authInterceptors(server.url) }));
  const { operation } = await client.submitOperation({
    requestId: "bookmarks-profile",
    spec: { kind: { case: "profileCreate", value: { profileId: "bookmarks", profileType: ProfileType.PERSONAL } } },
  });
  for await (const response of client.watchOperation({ name: operation!.name }, { timeoutMs: 10_000 })) head = response.event!.sequence;
  session = await openSession(server.url);
}, 60_000);

afterAll(async () => {
  await closeSession(session);
  await server?.close();
});

/** An idle WatchEvents stream from the newest event, for `timeoutMs`, by the lean path or the router. */
async function idleWatch(lean: boolean, gzip: boolean): Promise<H2Response> {
  server.config.leanWatchStreams = lean;
  try {
    return await h2Request(session, {
      path: "/agentmachine.v1.OperationService/WatchEvents",
      timeoutMs: 10_000,
      headers: {
        "content-type": "application/grpc+proto",
        te: "trailers",
        authorization: `Bearer ${server.token}`,
        "grpc-timeout": "1000m",
        "grpc-accept-encoding": gzip ? "gzip" : "identity",
      },
      body: envelope(toBinary(WatchEventsRequestSchema, create(WatchEventsRequestSchema, { afterSequence: head }))),
    });
  } finally {
    server.config.leanWatchStreams = true;
  }
}

/** Each frame of the body with its bookmark's time taken out (re-encoded), and the times. */
function withoutTimes(response: H2Response): { frames: string[]; times: bigint[] } {
  const times: bigint[] = [];
  const frames = decodeEnvelopes(response.body).map(({ flags, data }) => {
    const message = fromBinary(WatchEventsResponseSchema, data);
    if (message.kind.case !== "bookmark") throw new Error(`not a bookmark: ${message.kind.case}`);
    times.push(message.kind.value.time!.seconds);
    message.kind.value.time = undefined;
    return `${flags} ${Buffer.from(toBinary(WatchEventsResponseSchema, message)).toString("base64")}`;
  });
  return { frames, times };
}

describe("bookmarks of an idle lean WatchEvents stream", () => {
  for (const gzip of [false, true]) {
    it(`are the frames connect-node's handler sends, ${gzip ? "gzip" : "identity"}`, async () => {
      const lean = await idleWatch(true, gzip);
      const router = await idleWatch(false, gzip);
      // Both end with their deadline, the same way.
      expect(lean.trailers).toEqual(router.trailers);
      for (const response of [lean, router]) expect(response.headers["grpc-encoding"]).toBe(gzip ? "gzip" : undefined);
      const leanFrames = withoutTimes(lean);
      const routerFrames = withoutTimes(router);
      // Several bookmarks in a second, each at the newest sequence, uncompressed.
      expect(leanFrames.frames.length).toBeGreaterThanOrEqual(2);
      expect(new Set(leanFrames.frames)).toEqual(new Set(routerFrames.frames));
      const bookmark = create(WatchEventsResponseSchema, { kind: { case: "bookmark", value: { sequence: head } } });
      expect(new Set(leanFrames.frames)).toEqual(new Set([`0 ${Buffer.from(toBinary(WatchEventsResponseSchema, bookmark)).toString("base64")}`]));
      const now = BigInt(Math.floor(Date.now() / 1000));
      for (const time of [...leanFrames.times, ...routerFrames.times]) expect(now - time).toBeLessThan(60n);
    });
  }
});
