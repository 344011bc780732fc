// @grpc/grpc-js as an independent gRPC implementation: a generic client that knows nothing but
// method paths and protobuf-es (de)serializers, talking to the server over a real socket.
import { once } from "node:events";
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { AnySchema, anyUnpack, type Any } from "@bufbuild/protobuf/wkt";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ContractService } from "../../src/gen/agentmachine/v1/contract_service_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../src/gen/grpc/health/v1/health_pb.js";
import { authorizationHeader, credentialHeaderBytes } from "../helpers/auth.js";
import { ambientAuthorityContractText, exampleContractText } from "../helpers/contract-documents.js";
import { startCountingProxy } from "../helpers/counting-proxy.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const GZIP = 2; // grpc-js compression algorithms: 0 identity, 1 deflate, 2 gzip

type Rpc<I extends DescMessage, O extends DescMessage> = DescMethod & { input: I; output: O };

interface CallOptions {
  metadata?: Record<string, string>;
  deadline?: number;
}

/** The bearer credential as gRPC metadata, sent on every call (Health ignores it: it is exempt). */
const credential = (): Record<string, string> => authorizationHeader(server.token);

function metadataOf(entries: Record<string, string> = {}): grpc.Metadata {
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(entries)) metadata.set(key, value);
  return metadata;
}

/** `makeUnaryRequest` / `makeServerStreamRequest` arguments for one method of ours. */
function wire<I extends DescMessage, O extends DescMessage>(method: Rpc<I, O>) {
  return [
    `/${method.parent.typeName}/${method.name}`,
    (message: MessageShape<I>) => Buffer.from(toBinary(method.input, message)),
    (bytes: Buffer) => fromBinary(method.output, bytes),
  ] as const;
}

interface UnaryResult<O extends DescMessage> {
  response: MessageShape<O>;
  /** Response headers. */
  headers: grpc.Metadata;
}

function unary<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: Rpc<I, O>,
  request: MessageInitShape<I>,
  options: CallOptions = {},
): Promise<UnaryResult<O>> {
  return new Promise((resolve, reject) => {
    let headers = new grpc.Metadata();
    const call = client.makeUnaryRequest(
      ...wire(method),
      create(method.input, request),
      metadataOf({ ...credential(), ...options.metadata }),
      options.deadline === undefined ? {} : { deadline: options.deadline },
      (error, response) => (error ? reject(error) : resolve({ response: response ?? expect.fail("no response"), headers })),
    );
    call.on("metadata", (metadata) => (headers = metadata));
  });
}

function serverStream<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: Rpc<I, O>,
  request: MessageInitShape<I>,
  options: CallOptions = {},
): grpc.ClientReadableStream<MessageShape<O>> {
  return client.makeServerStreamRequest(
    ...wire(method),
    create(method.input, request),
    metadataOf({ ...credential(), ...options.metadata }),
    options.deadline === undefined ? {} : { deadline: options.deadline },
  );
}

/** The error a call fails with; fails the test if the call succeeds. */
async function failureOf(call: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await call;
  } catch (error) {
    return error as grpc.ServiceError;
  }
  return expect.fail("expected the call to fail");
}

/**
 * google.rpc.Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; },
 * read by hand: it is the one message on the wire without generated code here.
 */
function decodeStatus(bytes: Uint8Array): { code: number; message: string; details: Any[] } {
  const status = { code: 0, message: "", details: [] as Any[] };
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1) status.code = reader.int32();
    else if (field === 2) status.message = reader.string();
    else if (field === 3) status.details.push(fromBinary(AnySchema, reader.bytes()));
    else reader.skip(wireType);
  }
  return status;
}

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server.close());

const channels: { name: string; options: grpc.ChannelOptions }[] = [
  { name: "default channel", options: {} },
  { name: "gzip channel", options: { "grpc.default_compression_algorithm": GZIP, "grpc.default_compression_level": 2 } },
];

describe.each(channels)("@grpc/grpc-js client, $name", (channel) => {
  let client: grpc.Client;
  beforeAll(() => {
    client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure(), channel.options);
  });
  afterAll(() => client.close());

  it("ValidateContract finds the upstream example document valid, with no violations", async () => {
    const { response } = await unary(client, ContractService.method.validateContract, {
      document: { case: "json", value: exampleContractText },
    });
    expect(response.valid).toBe(true);
    expect(response.violations).toEqual([]);
  });

  it("GetContract returns a contract whose JSON validates when sent back", async () => {
    const { response: own } = await unary(client, ContractService.method.getContract, {});
    expect(own.contract?.kind).toBe("WorkspaceOperationContract");
    const { response } = await unary(client, ContractService.method.validateContract, { document: { case: "json", value: own.json } });
    expect(response.valid).toBe(true);
  });

  it("ValidateContract answers valid = false with a violation at /controls/ambientAuthority for ambient authority", async () => {
    const { response } = await unary(client, ContractService.method.validateContract, {
      document: { case: "json", value: ambientAuthorityContractText() },
    });
    expect(response.valid).toBe(false);
    expect(response.violations.map((v) => v.path)).toEqual(["/controls/ambientAuthority"]);
  });

  it("ValidateContract without a document is INVALID_ARGUMENT with buf.validate violations in grpc-status-details-bin", async () => {
    const error = await failureOf(unary(client, ContractService.method.validateContract, {}));
    expect(error.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(error.details).toContain("document");
    const [statusBytes, ...more] = error.metadata.get("grpc-status-details-bin");
    expect(more).toEqual([]);
    expect(statusBytes).toBeInstanceOf(Buffer);
    const status = decodeStatus(statusBytes as Buffer);
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    // buf.validate.Violations for clients that know protovalidate, and the google.rpc details
    // (BadRequest, ErrorInfo) for those that know only the standard ones.
    expect(status.details.map((detail) => detail.typeUrl.replace("type.googleapis.com/", ""))).toEqual([
      "buf.validate.Violations",
      "google.rpc.ErrorInfo",
      "google.rpc.BadRequest",
    ]);
    const violations = anyUnpack(status.details[0]!, ViolationsSchema);
    expect(violations?.violations.map((v) => v.field?.elements.map((e) => e.fieldName))).toEqual([["document"]]);
    expect(error.metadata.get("x-request-id")[0]).toMatch(UUID);
  });

  it("Health/Check answers SERVING, and NOT_FOUND for an unknown service", async () => {
    const { response } = await unary(client, Health.method.check, { service: "" });
    expect(response.status).toBe(Status.SERVING);
    const error = await failureOf(unary(client, Health.method.check, { service: "no.such.Service" }));
    expect(error.code).toBe(grpc.status.NOT_FOUND);
  });

  it("Health/Watch streams SERVING first and ends as CANCELLED when the client cancels", async () => {
    const stream = serverStream(client, Health.method.watch, { service: "" });
    const errored = new Promise<grpc.ServiceError>((resolve) => stream.on("error", resolve));
    const [first] = (await once(stream, "data")) as [MessageShape<typeof Health.method.watch.output>];
    expect(first.status).toBe(Status.SERVING);
    stream.cancel();
    expect((await errored).code).toBe(grpc.status.CANCELLED);
  });

  it("Health/Watch with a 200 ms deadline sends SERVING, then ends with DEADLINE_EXCEEDED", async () => {
    const stream = serverStream(client, Health.method.watch, { service: "" }, { deadline: Date.now() + 200 });
    const seen: Status[] = [];
    stream.on("data", (message: MessageShape<typeof Health.method.watch.output>) => seen.push(message.status));
    const [error] = (await once(stream, "error")) as [grpc.ServiceError];
    expect(error.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(seen).toEqual([Status.SERVING]);
  });

  it("answers with a fresh x-request-id, and echoes a well-formed one the client sends", async () => {
    const fresh = await unary(client, Health.method.check, { service: "" });
    expect(fresh.headers.get("x-request-id")).toEqual([expect.stringMatching(UUID)]);
    const echoed = await unary(client, Health.method.check, { service: "" }, { metadata: { "x-request-id": "grpc-js.echo-1" } });
    expect(echoed.headers.get("x-request-id")).toEqual(["grpc-js.echo-1"]);
  });
});

describe("@grpc/grpc-js compression on the wire", () => {
  it.each(channels)("$name: requests are compressed only when gzip is configured, large responses always are", async (channel) => {
    const proxy = await startCountingProxy(server.port);
    const client = new grpc.Client(proxy.address, grpc.credentials.createInsecure(), channel.options);
    try {
      const { response } = await unary(client, ContractService.method.validateContract, {
        document: { case: "json", value: exampleContractText },
      });
      expect(response.valid).toBe(true);
      // Not counting the credential: its header (over 1 kB) is no part of what gzip is about.
      const sent = proxy.bytes().sent - credentialHeaderBytes(server.token, "2");
      if (channel.options["grpc.default_compression_algorithm"] === GZIP) expect(sent).toBeLessThan(exampleContractText.length);
      else expect(sent).toBeGreaterThan(exampleContractText.length);

      // grpc-js always offers gzip in grpc-accept-encoding, and the server takes it up.
      const before = proxy.bytes().received;
      const { response: own } = await unary(client, ContractService.method.getContract, {});
      expect(proxy.bytes().received - before).toBeLessThan(own.json.length);
    } finally {
      client.close();
      await proxy.close();
    }
  });
});
