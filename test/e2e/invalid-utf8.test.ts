// Invalid UTF-8 in a string field of a binary request is InvalidArgument with a field violation
// naming the field (issue 14, finding 9), in every RPC and at any depth: a top-level field, a
// repeated field in a oneof, a map's key and value, a nested filter's field. Before, protobuf-es
// refused the bytes while connect-es parsed the request, and connect-es reports any parse
// failure as Internal ("parse binary: …"), before any interceptor could see the call. The
// requests are built by hand (a valid encoding whose marker bytes are then replaced by invalid
// UTF-8 of the same length) and sent over real sockets with the Connect protocol
// (application/proto), gRPC and gRPC-Web. Nothing is stored, and no unexpected error is logged.
import type * as http2 from "node:http2";
import { create, toBinary, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError } from "@connectrpc/connect";
import { errorFromJsonBytes } from "@connectrpc/connect/protocol-connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ListOperationsRequestSchema, SubmitOperationRequestSchema } from "../../src/gen/agentmachine/v1/operation_service_pb.js";
import { authorizationHeader } from "../helpers/auth.js";
import { createProfile, operationsClient, requestId, type OperationsClient } from "../helpers/operations.js";
import { closeSession, envelope, GRPC_REQUEST_HEADERS, grpcWebTrailers, h1Request, h2Request, openSession, type RawResponse } from "../helpers/raw-http2.js";
import { fieldPath } from "../helpers/violations.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/** Eight ASCII bytes in the valid encoding, replaced on the wire by eight that are not UTF-8: a stray continuation byte, 0xFF, an overlong "/", an encoded surrogate. */
const MARKER = "zUTF8zzz";
const INVALID = Buffer.from([0x61, 0x80, 0xff, 0xc0, 0xaf, 0xed, 0xa0, 0x80]);
const SUBMIT = "/agentmachine.v1.OperationService/SubmitOperation";
const LIST = "/agentmachine.v1.OperationService/ListOperations";

let server: TestServer;
let session: http2.ClientHttp2Session;
let client: OperationsClient;
let profile: string;

beforeAll(async () => {
  server = await startTestServer();
  session = await openSession(server.url);
  client = operationsClient(server.url);
  profile = await createProfile(client, "utf8");
});
afterAll(async () => {
  await closeSession(session);
  await server.close();
});

/** The binary encoding of `init`, with every MARKER replaced by INVALID. */
function withInvalidUtf8<Desc extends DescMessage>(schema: Desc, init: MessageInitShape<Desc>): Buffer {
  const bytes = Buffer.from(toBinary(schema, create(schema, init)));
  let at = bytes.indexOf(MARKER);
  expect(at).toBeGreaterThanOrEqual(0);
  for (; at >= 0; at = bytes.indexOf(MARKER, at)) INVALID.copy(bytes, at);
  return bytes;
}

type Protocol = "connect" | "grpc" | "grpc-web";

/** Response headers and trailers as fetch Headers, without HTTP/2's pseudo-headers. */
function headersOf(...fields: Record<string, string>[]): Headers {
  return new Headers(fields.flatMap((f) => Object.entries(f)).filter(([name]) => !name.startsWith(":")));
}

/** Sends `body` (one binary message) to `path` with `protocol`; the error it answered. */
async function send(protocol: Protocol, path: string, body: Buffer): Promise<ConnectError> {
  const auth = authorizationHeader(server.token);
  const noError = new ConnectError("the call succeeded", Code.Unknown);
  let response: RawResponse;
  switch (protocol) {
    case "connect":
      response = await h1Request(server.url, { path, headers: { "content-type": "application/proto", "connect-protocol-version": "1", ...auth }, body });
      return response.status === 200 ? noError : errorFromJsonBytes(response.body, response.headers, noError);
    case "grpc":
      response = await h2Request(session, { path, headers: { ...GRPC_REQUEST_HEADERS, ...auth }, body: envelope(body) });
      return findTrailerError(headersOf(response.headers, response.trailers)) ?? noError;
    case "grpc-web":
      response = await h1Request(server.url, { path, headers: { "content-type": "application/grpc-web+proto", ...auth }, body: envelope(body) });
      return findTrailerError(headersOf(response.headers, grpcWebTrailers(response))) ?? noError;
  }
}

interface Case {
  title: string;
  path: string;
  body: () => Buffer;
  /** The field the violation names; a map key as the server read it, each bad sequence a U+FFFD. */
  field: string;
}

const cases: Case[] = [
  {
    title: "SubmitOperationRequest.request_id",
    path: SUBMIT,
    body: () =>
      withInvalidUtf8(SubmitOperationRequestSchema, { requestId: MARKER, profile, spec: { kind: { case: "toolGrantApply", value: { tool: "git" } } } }),
    field: "request_id",
  },
  {
    title: "an argv item in the spec's oneof",
    path: SUBMIT,
    body: () =>
      withInvalidUtf8(SubmitOperationRequestSchema, {
        requestId: requestId("utf8"),
        profile,
        spec: { kind: { case: "executionStart", value: { argv: ["echo", MARKER] } } },
      }),
    field: "spec.execution_start.argv[1]",
  },
  {
    title: "an env value",
    path: SUBMIT,
    body: () =>
      withInvalidUtf8(SubmitOperationRequestSchema, {
        requestId: requestId("utf8"),
        profile,
        spec: { kind: { case: "executionStart", value: { argv: ["true"], env: { X: MARKER } } } },
      }),
    field: 'spec.execution_start.env["X"]',
  },
  {
    title: "a label's key",
    path: SUBMIT,
    body: () =>
      withInvalidUtf8(SubmitOperationRequestSchema, {
        requestId: requestId("utf8"),
        profile,
        labels: { [MARKER]: "v" },
        spec: { kind: { case: "toolGrantApply", value: { tool: "git" } } },
      }),
    field: 'labels["a\uFFFD\uFFFD\uFFFD\uFFFD\uFFFD\uFFFD\uFFFD"]',
  },
  {
    title: "ListOperationsRequest.filter.labels value",
    path: LIST,
    body: () => withInvalidUtf8(ListOperationsRequestSchema, { filter: { labels: { batch: MARKER } } }),
    field: 'filter.labels["batch"]',
  },
];

async function storedOperations(): Promise<string[]> {
  return (await client.listOperations({ pageSize: 1000 })).operations.map((o) => o.name);
}

describe.each<Protocol>(["connect", "grpc", "grpc-web"])("over %s, invalid UTF-8 is InvalidArgument naming the field", (protocol) => {
  it.each(cases)("$title", async ({ path, body, field }) => {
    const before = await storedOperations();
    const error = await send(protocol, path, body());
    expect({ code: Code[error.code], message: error.rawMessage }).toEqual({
      code: Code[Code.InvalidArgument],
      message: `${field}: must be valid UTF-8 [valid_utf8]`,
    });
    const violations = error.findDetails(ViolationsSchema)[0]?.violations ?? [];
    expect(violations.map((v) => ({ field: fieldPath(v), ruleId: v.ruleId, message: v.message, forKey: v.forKey }))).toEqual([
      { field, ruleId: "valid_utf8", message: "must be valid UTF-8", forKey: field.startsWith("labels[") },
    ]);
    expect(await storedOperations()).toEqual(before);
  });
});

it("the same requests with valid UTF-8 pass", async () => {
  for (const { path, body } of cases.filter((c) => c.path === SUBMIT)) {
    const valid = body();
    for (let at = valid.indexOf(INVALID); at >= 0; at = valid.indexOf(INVALID, at)) valid.write("utf8-ok.", at, "latin1");
    expect(await send("grpc", path, valid)).toMatchObject({ code: Code.Unknown, rawMessage: "the call succeeded" });
  }
});

it("logged no unexpected error", () => {
  expect(server.logs.filter((line) => line.level === "error" || line.level === "warn").map((line) => line.msg)).not.toContain("unexpected error in handler");
  expect(server.logs.filter((line) => line.msg === "rpc failed" && line.code === "Internal")).toEqual([]);
});
